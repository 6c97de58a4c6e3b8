"""Read an already-encoded query from a JSON or NPZ file (for `isr search --query FILE`).

Entry point: :func:`load_query`. JSON: {"fast": [...], "fragments": [[...], ...],
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

__all__ = ["load_query", "query_from_json"]


def _keywords(labels: Any, probs: Any) -> Keywords:
    labels = [str(x) for x in (labels if labels is not None else [])]
    if probs is None:
        probs = [1.0] * len(labels)
    return Keywords(tuple(labels), tuple(float(p) for p in probs))


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
    try:
        fast = _one(np.asarray(body["fast"], dtype=np.float32), 1, "fast")
        frags = _one(np.asarray(body["fragments"], dtype=np.float32), 2, "fragments")
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"query: vectors must be arrays of numbers ({e})") from e
    mask = np.asarray(body.get("mask", np.ones(frags.shape[0])), dtype=bool)
    kw = body.get("keywords", [])
    keywords = (
        _keywords(kw.get("labels"), kw.get("probs"))
        if isinstance(kw, dict)
        else _keywords(kw, None)
    )
    return Encoded(fast[None], frags[None], mask[None], (keywords,))


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
