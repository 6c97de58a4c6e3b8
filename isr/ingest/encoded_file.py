"""Gallery source over items encoded elsewhere: JSONL or Parquet of fast vectors, fragments and
keywords. Indexing only; no bundle is loaded.

Entry point: :class:`EncodedFileSource` (reads either format, by file suffix); the writers
of both formats are in :mod:`isr.ingest.encoded_export`.

One record per item::

    {"id": "img-17", "fast": [d_fast floats], "fragments": [[d floats], ...],
     "keywords": ["dog", "beach"], "keyword_probs": [0.9, 0.4], "_source": {...}}

``keywords`` (ranked best first), ``keyword_probs`` (default 1.0 each) and ``_source`` are
optional. Parquet: the same column names, ``fast`` a list of floats, ``fragments`` a list of
lists (fixed-size lists work too), ``_source`` a JSON string or a struct; the file is read one
row group at a time, so write it with row groups of a few thousand rows (as
:class:`~isr.ingest.encoded_export.ParquetWriter` does). JSONL needs nothing beyond the standard library; Parquet needs ``pyarrow``.
Malformed records are skipped and reported; dims, NaN and norms are checked by the loader
against the index. Position: the line number (JSONL) or the row number (Parquet).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isr.encoders.record import Keywords
from isr.errors import InvalidInput, NotFound
from isr.ingest.captions import count_lines
from isr.ingest.source import EncodedRows, Skip, SourceBatch, check_start

__all__ = ["EncodedFileSource", "pyarrow_modules"]

_COLUMNS = ("id", "fast", "fragments", "keywords", "keyword_probs", "_source")
_Item = tuple[str, np.ndarray, np.ndarray, Keywords, Mapping[str, Any] | None]


def pyarrow_modules() -> Any:
    try:
        import pyarrow as pa  # noqa: PLC0415  (optional: Parquet files only)
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError as e:  # an optional extra: JSONL works without it
        raise InvalidInput(
            "reading or writing Parquet needs pyarrow (pip install pyarrow); JSONL does not"
        ) from e
    return pa, pq


class _Malformed(Exception):
    """Why a record cannot be read (reported as a skip, never raised out of the reader)."""


def _item(
    pos: int, doc_id: Any, fast: Any, frags: Any, labels: Any, probs: Any, src: Any
) -> _Item | Skip:
    """Structural checks of one record; the values themselves are checked by the loader."""
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    if not isinstance(doc_id, str) or not doc_id:
        return Skip(pos, "", "malformed record", f"'id' must be a non-empty string, got {doc_id!r}")
    try:
        return doc_id, *_parse(fast, frags, labels, probs, src)
    except _Malformed as e:
        return Skip(pos, doc_id, "malformed record", str(e))


def _parse(
    fast: Any, frags: Any, labels: Any, probs: Any, src: Any
) -> tuple[np.ndarray, np.ndarray, Keywords, Mapping[str, Any] | None]:
    try:
        f = np.asarray(fast, dtype=np.float32)  # (d_fast,)
        fr = np.asarray(frags, dtype=np.float32)  # (n, d)
    except (TypeError, ValueError) as e:
        raise _Malformed(f"vectors are not lists of numbers ({e})") from e
    if f.ndim != 1:
        raise _Malformed(f"'fast' must be a list of numbers, got shape {f.shape}")
    if fr.ndim != 2:
        raise _Malformed(f"'fragments' must be a list of equal-length vectors, got {fr.shape}")
    labels = [] if labels is None else labels
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise _Malformed(f"'keywords' must be a list of labels, got {labels!r}")
    try:
        ps = [1.0] * len(labels) if probs is None else [float(p) for p in probs]
        kw = Keywords(tuple(labels), tuple(ps))
    except (InvalidInput, TypeError, ValueError) as e:
        raise _Malformed(f"bad keywords: {e}") from e
    if isinstance(src, str):
        try:
            src = json.loads(src)
        except json.JSONDecodeError as e:
            raise _Malformed(f"'_source' is not valid JSON ({e})") from e
    if src is not None and not isinstance(src, Mapping):
        raise _Malformed(f"'_source' must be an object, got {type(src).__name__}")
    return f, fr, kw, src


def _batch(start: int, end: int, got: list[tuple[int, _Item | Skip]]) -> SourceBatch:
    items = [(p, x) for p, x in got if not isinstance(x, Skip)]
    return SourceBatch(
        start=start,
        end=end,
        ids=tuple(x[0] for _, x in items),
        positions=tuple(p for p, _ in items),
        payload=EncodedRows(
            tuple(x[1] for _, x in items),
            tuple(x[2] for _, x in items),
            tuple(x[3] for _, x in items),
        ),
        sources=tuple(x[4] for _, x in items),
        skipped=tuple(x for _, x in got if isinstance(x, Skip)),
    )


class EncodedFileSource:
    """Pre-encoded items from ``*.jsonl`` (or ``*.json``) or ``*.parquet``."""

    payload = "encoded"
    feature_dim = None

    def __init__(self, path: str | Path, modality: str = "image") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFound(f"encoded features file not found: {self.path}")
        suffix = self.path.suffix.lower()
        if suffix not in (".jsonl", ".json", ".parquet"):
            raise InvalidInput(
                f"{self.path}: unknown format {suffix!r}; expected .jsonl or .parquet"
            )
        if modality not in ("image", "text"):
            raise InvalidInput(f"modality {modality!r} is not 'image' or 'text'")
        self.format = "parquet" if suffix == ".parquet" else "jsonl"
        self._modality = modality
        self._size: int | None = None

    @property
    def modality(self) -> str:
        return self._modality

    def describe(self) -> dict[str, Any]:
        return {"kind": "encoded", "path": str(self.path.resolve()), "format": self.format}

    def size(self) -> int:
        if self._size is None:
            if self.format == "parquet":
                _, pq = pyarrow_modules()
                self._size = int(pq.ParquetFile(self.path).metadata.num_rows)
            else:
                self._size = count_lines(self.path)
        return self._size

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        check_start(batch_size, start, self.size())
        if self.format == "parquet":
            return self._parquet(batch_size, start)
        return self._jsonl(batch_size, start)

    # -- JSONL -----------------------------------------------------------------------------

    def _jsonl(self, batch_size: int, start: int) -> Iterator[SourceBatch]:
        got: list[tuple[int, _Item | Skip]] = []
        first = start
        with self.path.open("rb") as f:
            for pos, raw in enumerate(f):
                if pos < start:
                    continue
                if raw.strip():  # a blank line is a position but no record
                    got.append((pos, self._json_record(pos, raw)))
                if pos + 1 - first == batch_size:
                    yield _batch(first, pos + 1, got)
                    got, first = [], pos + 1
        end = self.size()
        if end > first:
            yield _batch(first, end, got)

    @staticmethod
    def _json_record(pos: int, raw: bytes) -> _Item | Skip:
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return Skip(pos, "", "malformed record", f"not valid JSON ({e})")
        if not isinstance(rec, dict):
            return Skip(pos, "", "malformed record", "not a JSON object")
        missing = [k for k in ("id", "fast", "fragments") if k not in rec]
        if missing:
            return Skip(pos, str(rec.get("id", "")), "malformed record", f"lacks {missing}")
        return _item(
            pos,
            rec["id"],
            rec["fast"],
            rec["fragments"],
            rec.get("keywords"),
            rec.get("keyword_probs"),
            rec.get("_source"),
        )

    # -- Parquet ---------------------------------------------------------------------------

    def _parquet(self, batch_size: int, start: int) -> Iterator[SourceBatch]:
        pa, pq = pyarrow_modules()
        pf = pq.ParquetFile(self.path)
        names = set(pf.schema_arrow.names)
        missing = [k for k in ("id", "fast", "fragments") if k not in names]
        if missing:
            raise InvalidInput(f"{self.path}: no column(s) {missing}; it has {sorted(names)}")
        cols = [c for c in _COLUMNS if c in names]
        # Resume at a row group boundary, then drop the rows before `start` inside it.
        rg_rows = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        g0, pos = 0, 0
        while g0 < len(rg_rows) and pos + rg_rows[g0] <= start:
            pos += rg_rows[g0]
            g0 += 1
        groups = list(range(g0, len(rg_rows)))
        if not groups:
            return
        for rb in pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=cols):
            lo = max(0, start - pos)
            if lo < rb.num_rows:
                rows = rb.slice(lo) if lo else rb
                yield self._parquet_batch(pa, rows, pos + lo)
            pos += rb.num_rows

    def _parquet_batch(self, pa: Any, rb: Any, first: int) -> SourceBatch:
        n = rb.num_rows
        col = dict(zip(rb.schema.names, rb.columns))
        ids = col["id"].to_pylist()
        fast = _ragged(pa, col["fast"], pa.list_(pa.float32()), n)
        frags = _ragged2(pa, col["fragments"], n)
        labels = col["keywords"].to_pylist() if "keywords" in col else [None] * n
        probs = col["keyword_probs"].to_pylist() if "keyword_probs" in col else [None] * n
        srcs = col["_source"].to_pylist() if "_source" in col else [None] * n
        got: list[tuple[int, _Item | Skip]] = []
        for i in range(n):
            p = first + i
            if fast[i] is None or frags[i] is None:
                skip = Skip(p, str(ids[i] or ""), "malformed record", "null or ragged vectors")
                got.append((p, skip))
                continue
            got.append((p, _item(p, ids[i], fast[i], frags[i], labels[i], probs[i], srcs[i])))
        return _batch(first, first + n, got)


def _valid(col: Any, n: int) -> np.ndarray:
    """Row validity (n,) bool, without per-row work when the column has no nulls."""
    if col.null_count == 0:
        return np.ones(n, dtype=bool)
    return np.asarray(col.is_valid().to_pylist(), dtype=bool)


def _ragged(pa: Any, col: Any, typ: Any, n: int) -> list[np.ndarray | None]:
    """A list<float> column -> one float32 array per row (None for a null row)."""
    try:
        col = col.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInput(f"column of type {col.type} is not a list of floats ({e})") from e
    off = col.offsets.to_numpy()  # (n+1,)
    vals = col.values.to_numpy(zero_copy_only=False)
    valid = _valid(col, n)
    if col.values.null_count:  # a null float makes its row unusable
        nulls = np.flatnonzero(np.asarray(col.values.is_null().to_pylist(), dtype=bool))
        valid[np.searchsorted(off, nulls, side="right") - 1] = False
    return [vals[off[i] : off[i + 1]] if valid[i] else None for i in range(n)]


def _ragged2(pa: Any, col: Any, n: int) -> list[np.ndarray | None]:
    """A list<list<float>> column -> one (n_i, d) float32 array per row (None for a null
    row, or one whose vectors differ in length or hold nulls)."""
    typ = pa.list_(pa.list_(pa.float32()))
    try:
        col = col.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise InvalidInput(f"'fragments' of type {col.type} is not a list of lists ({e})") from e
    off = col.offsets.to_numpy()  # (n+1,) into the inner lists
    inner = col.values
    ioff = inner.offsets.to_numpy()  # into the floats
    lens = np.diff(ioff)  # (inner rows,)
    vals = inner.values.to_numpy(zero_copy_only=False)
    valid = _valid(col, n)
    inner_ok = _valid(inner, len(inner))
    if inner.values.null_count:  # a null float: flag every inner vector holding one
        nulls = np.flatnonzero(np.asarray(inner.values.is_null().to_pylist(), dtype=bool))
        inner_ok[np.searchsorted(ioff, nulls, side="right") - 1] = False
    out: list[np.ndarray | None] = []
    for i in range(n):
        a, b = int(off[i]), int(off[i + 1])
        if not valid[i] or not inner_ok[a:b].all():
            out.append(None)
        elif a == b:
            out.append(np.zeros((0, 0), np.float32))
        elif (lens[a:b] != lens[a]).any():
            out.append(None)
        else:
            out.append(vals[ioff[a] : ioff[b]].reshape(b - a, int(lens[a])))
    return out
