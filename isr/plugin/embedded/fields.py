"""Indexed `_source` fields for user filters: a dynamic mapping, term postings, numeric columns.

Entry point: :class:`FieldIndex`. Like Elasticsearch's dynamic mapping, a top-level field's
type is fixed by the first value seen: str (or list of str) -> keyword, bool -> boolean,
int -> long, float -> double. Objects and nulls are stored in `_source` but not indexed.
Keyword and boolean fields keep value -> rows roaring bitmaps; numeric fields a float64
column (NaN where absent). The index rebuilds this from the document table on open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pyroaring import BitMap

from isr.errors import InvalidInput
from isr.plugin.filters import And, Filter, MatchAll, Not, Or, Range, Term

__all__ = ["FIELD_TYPES", "FieldIndex"]

FIELD_TYPES = ("keyword", "boolean", "long", "double")
NUMERIC = ("long", "double")


def _infer(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "keyword"
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "keyword"
    if isinstance(value, list) and value and all(isinstance(v, bool) for v in value):
        return "boolean"
    return None


def _as_terms(value: Any, ftype: str, where: str) -> list[str]:
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if ftype == "boolean":
            if not isinstance(v, bool):
                raise InvalidInput(f"{where}: boolean field got {v!r}")
            out.append("true" if v else "false")
        else:
            if isinstance(v, (dict, list)) or v is None:
                raise InvalidInput(f"{where}: keyword field got {v!r}")
            out.append(
                v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
            )
    return out


def _as_number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(
            f"{where}: numeric field got {value!r} (arrays of numbers are not indexed)"
        )
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidInput(f"{where}: numeric field got non-finite {value!r}")
    return float(value)


class FieldIndex:
    """Filterable fields of the `_source` documents of one index."""

    def __init__(
        self, mapping: Mapping[str, str] | None = None, stored: Sequence[str] = ()
    ) -> None:
        self.mapping: dict[str, str] = dict(mapping or {})
        self.stored = frozenset(stored)  # kept in _source only, never indexed (free text)
        self.terms: dict[str, dict[str, BitMap]] = {}
        self.columns: dict[str, np.ndarray] = {}
        self.n_rows = 0

    def plan(
        self, ids: Sequence[str], sources: Sequence[Mapping[str, Any] | None]
    ) -> dict[str, str]:
        """Validate a batch against the mapping; return the fields it would add to it."""
        new: dict[str, str] = {}
        for doc_id, src in zip(ids, sources):
            if src is None:
                continue
            for field, value in src.items():
                if field in self.stored:
                    continue
                ftype = self.mapping.get(field) or new.get(field)
                where = f"document {doc_id!r}, field {field!r}"
                if ftype is None:
                    inferred = _infer(value)
                    if inferred is not None:
                        new[field] = inferred
                    continue
                if value is None:
                    continue
                if ftype in NUMERIC:
                    _as_number(value, where + f" ({ftype})")
                else:
                    _as_terms(value, ftype, where)
        return new

    def add(self, rows: Sequence[int], sources: Sequence[Mapping[str, Any] | None]) -> None:
        """Index already-validated sources at `rows` (rows are appended in increasing order)."""
        if rows:
            self._grow(int(max(rows)) + 1)
        for row, src in zip(rows, sources):
            if src is None:
                continue
            for field, value in src.items():
                if field in self.stored:
                    continue
                ftype = self.mapping.get(field)
                if ftype is None:
                    inferred = _infer(value)
                    if inferred is None:
                        continue
                    ftype = self.mapping[field] = inferred
                if value is None:
                    continue
                if ftype in NUMERIC:
                    col = self.columns.get(field)
                    if col is None:  # not setdefault: that would allocate a column per value
                        col = self.columns[field] = self._nan_column()
                    col[row] = _as_number(value, field)
                else:
                    postings = self.terms.setdefault(field, {})
                    for t in _as_terms(value, ftype, field):
                        postings.setdefault(t, BitMap()).add(int(row))

    def _nan_column(self) -> np.ndarray:
        return np.full(max(self.n_rows, 1024), np.nan)

    def _grow(self, n: int) -> None:
        if n <= self.n_rows:
            return
        self.n_rows = n
        for field, col in self.columns.items():
            if col.shape[0] < n:
                grown = np.full(max(n, 2 * col.shape[0]), np.nan)
                grown[: col.shape[0]] = col
                self.columns[field] = grown

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self, f: Filter, n_rows: int) -> BitMap:
        """Rows < n_rows that match `f` (tombstones are the caller's business)."""
        if isinstance(f, MatchAll):
            return BitMap(range(n_rows))
        if isinstance(f, And):
            out = self.evaluate(f.children[0], n_rows)
            for c in f.children[1:]:
                out &= self.evaluate(c, n_rows)
            return out
        if isinstance(f, Or):
            return BitMap.union(*(self.evaluate(c, n_rows) for c in f.children))
        if isinstance(f, Not):
            return BitMap(range(n_rows)) - self.evaluate(f.child, n_rows)
        ftype = self.field_type(f.field)
        if isinstance(f, Range):
            if ftype not in NUMERIC:
                raise InvalidInput(
                    f"range on field {f.field!r}: field is {ftype}; range needs a long or double field"
                )
            col = self.columns.get(f.field, np.full(n_rows, np.nan))[:n_rows]
            ok = ~np.isnan(col)
            if f.gt is not None:
                ok &= col > f.gt
            if f.gte is not None:
                ok &= col >= f.gte
            if f.lt is not None:
                ok &= col < f.lt
            if f.lte is not None:
                ok &= col <= f.lte
            return BitMap(np.flatnonzero(ok).astype(np.uint32))
        values = (f.value,) if isinstance(f, Term) else f.values
        if ftype in NUMERIC:
            col = self.columns.get(f.field, np.full(n_rows, np.nan))[:n_rows]
            nums = [_as_number(v, f"term on field {f.field!r}") for v in values]
            return BitMap(np.flatnonzero(np.isin(col, nums)).astype(np.uint32))
        postings = self.terms.get(f.field, {})
        keys = _as_terms(list(values), "keyword", f"term on field {f.field!r}")
        if ftype == "boolean":
            keys = [k.lower() for k in keys]
        return BitMap.union(BitMap(), *(postings.get(k, BitMap()) for k in keys))

    def field_type(self, field: str) -> str:
        if field in self.stored:
            raise InvalidInput(
                f"filter field {field!r} is stored in _source but not indexed (stored_fields)"
            )
        try:
            return self.mapping[field]
        except KeyError:
            known = ", ".join(sorted(self.mapping)) or "none"
            raise InvalidInput(f"unknown filter field {field!r}; indexed fields: {known}") from None
