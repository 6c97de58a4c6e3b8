"""Read an already-encoded query from a JSON or NPZ file (for `isr search --query FILE`).

Entry points: :func:`load_query`, :func:`query_to_json` (what `isr search --save-query`
writes). JSON: {"fast": [...], "fragments": [[...], ...],
"mask": [...] (optional), "keywords": ["dog", ...] or {"labels": [...], "probs": [...]}}.
NPZ: arrays `fast` (d,), `fragments` (n, d), optional `mask` (n,), `keywords` (str array),
optional `keyword_probs`. The same shapes with a leading batch axis are accepted for one item.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from isr.encoders.record import Encoded, Keywords
from isr.errors import InvalidInput, NotFound

__all__ = [
    "MAX_QUERY_DIMS",
    "MAX_QUERY_FRAGMENTS",
    "load_query",
    "query_from_json",
    "query_to_json",
]

MAX_QUERY_FRAGMENTS = 1024  # a text query has one fragment per token; the model caps far lower
MAX_QUERY_DIMS = 4096
MAX_QUERY_KEYWORDS = 1024


def _keywords(labels: Any, probs: Any) -> Keywords:
    if labels is None:
        labels = []
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if isinstance(probs, np.ndarray):
        probs = probs.tolist()
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise InvalidInput(
            f"query keywords: expected a list of non-empty strings, got {str(labels)[:200]}"
        )
    if len(labels) > MAX_QUERY_KEYWORDS:
        raise InvalidInput(f"query keywords: {len(labels)} labels, at most {MAX_QUERY_KEYWORDS}")
    if probs is None:
        probs = [1.0] * len(labels)
    if (
        not isinstance(probs, list)
        or len(probs) != len(labels)
        or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= p <= 1.0
            for p in probs
        )
    ):
        raise InvalidInput(
            f"query keywords: probs must be {len(labels)} numbers in [0, 1], one per label"
        )
    try:
        return Keywords(tuple(labels), tuple(float(p) for p in probs))
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"query keywords: {e}") from e


def _one(x: np.ndarray, ndim: int, name: str) -> np.ndarray:
    if x.ndim == ndim + 1 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != ndim:
        raise InvalidInput(f"query {name}: expected {ndim} dims, got shape {x.shape}")
    return x


def query_from_json(body: dict[str, Any]) -> Encoded:
    if not isinstance(body, dict):
        raise InvalidInput("query: expected a JSON object with fast, fragments, keywords")
    for key in ("fast", "fragments"):
        if key not in body:
            raise InvalidInput(f"query: missing {key!r}")
    f, g = body["fragments"], body["fast"]
    if isinstance(f, list) and len(f) > MAX_QUERY_FRAGMENTS:  # before converting them
        raise InvalidInput(f"query: {len(f)} fragments, at most {MAX_QUERY_FRAGMENTS}")
    if isinstance(g, list) and len(g) > MAX_QUERY_DIMS:
        raise InvalidInput(f"query: fast vector of {len(g)} dims, at most {MAX_QUERY_DIMS}")
    try:
        fast = _one(np.asarray(g, dtype=np.float32), 1, "fast")
        frags = _one(np.asarray(f, dtype=np.float32), 2, "fragments")
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidInput(f"query: vectors must be arrays of numbers ({str(e)[:200]})") from e
    if frags.shape[0] > MAX_QUERY_FRAGMENTS or frags.shape[1] > MAX_QUERY_DIMS:
        raise InvalidInput(
            f"query: fragments of shape {frags.shape}, at most {MAX_QUERY_FRAGMENTS} x "
            f"{MAX_QUERY_DIMS}"
        )
    if fast.shape[0] > MAX_QUERY_DIMS:
        raise InvalidInput(f"query: fast vector of {fast.shape[0]} dims, at most {MAX_QUERY_DIMS}")
    raw_mask = body.get("mask")
    try:
        mask = np.asarray(np.ones(frags.shape[0]) if raw_mask is None else raw_mask)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"query: mask must be a list of booleans ({str(e)[:200]})") from e
    if mask.shape != (frags.shape[0],) or mask.dtype.kind not in "biuf":
        raise InvalidInput(
            f"query: mask must be {frags.shape[0]} booleans (one per fragment), got shape "
            f"{mask.shape}"
        )
    kw = body.get("keywords", [])
    keywords = (
        _keywords(kw.get("labels"), kw.get("probs"))
        if isinstance(kw, dict)
        else _keywords(kw, None)
    )
    try:
        return Encoded(fast[None], frags[None], mask.astype(bool)[None], (keywords,))
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"query: {str(e)[:300]}") from e


def query_to_json(q: Encoded) -> dict[str, Any]:
    """The first query of `q` in the shape :func:`query_from_json` reads (the `--query` file,
    `ext.isr.query_encoded`): its kept fragments only, keywords with their probabilities."""
    keep = np.asarray(q.mask[0], dtype=bool)
    kw = q.keywords[0]
    return {
        "fast": np.asarray(q.fast[0], dtype=np.float32).tolist(),
        "fragments": np.asarray(q.fragments[0], dtype=np.float32)[keep].tolist(),
        "keywords": {"labels": list(kw.labels), "probs": [float(p) for p in kw.probs]},
    }


def load_query(path: str | Path) -> Encoded:
    path = Path(path)
    if not path.exists():
        raise NotFound(f"query file {path} does not exist")
    if path.suffix == ".json":
        try:
            return query_from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInput(f"{path}: not valid JSON ({e})") from e
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            raise InvalidInput(f"{path}: not a readable .npz file ({e})") from e
        body: dict[str, Any] = {
            "fast": arrays.get("fast"),
            "fragments": arrays.get("fragments"),
            "keywords": {"labels": arrays.get("keywords"), "probs": arrays.get("keyword_probs")},
        }
        if "mask" in arrays:
            body["mask"] = arrays["mask"]
        if body["fast"] is None or body["fragments"] is None:
            raise InvalidInput(f"{path}: needs arrays 'fast' and 'fragments', has {sorted(arrays)}")
        return query_from_json(body)
    raise InvalidInput(f"{path}: query files are .json or .npz, got {path.suffix!r}")
