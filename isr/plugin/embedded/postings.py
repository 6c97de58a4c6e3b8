"""Keyword postings: each document's top R_I labels, and label -> rows roaring bitmaps.

Entry point: :class:`KeywordPostings`. A document's labels are stored as term ids in an
append-only (N, R_I) int32 row file (-1 pads); the bitmaps are derived from it in memory,
on open and as batches commit. Term strings <-> ids live in the document table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyroaring import BitMap

from isr.errors import InvalidInput
from isr.plugin.backend import MODES
from isr.plugin.store.rowfile import RowFile

__all__ = ["KeywordPostings"]


class KeywordPostings:
    FILE = "keywords.i32"

    def __init__(self, path: Path, r_i: int, n_rows: int, readonly: bool = False) -> None:
        self.r_i = r_i
        self.labels = RowFile(path / self.FILE, np.int32, (r_i,), n_rows, readonly)
        self.postings: dict[int, BitMap] = {}
        self.published = 0
        self.publish(n_rows)

    def append(self, term_ids: np.ndarray) -> None:
        """term_ids (B, R_I) int32, -1 where a document has fewer labels."""
        self.labels.append(term_ids)

    def publish(self, n_rows: int) -> None:
        """Add rows [published, n_rows) to the bitmaps."""
        if n_rows <= self.published:
            return
        block = self.labels.view()[self.published : n_rows]  # (b, R_I)
        rows = np.repeat(np.arange(self.published, n_rows, dtype=np.uint32), self.r_i)
        tids = block.reshape(-1)
        keep = tids >= 0
        rows, tids = rows[keep], tids[keep]
        order = np.argsort(tids, kind="stable")
        rows, tids = rows[order], tids[order]
        cuts = np.flatnonzero(np.diff(tids)) + 1
        for part_rows, tid in zip(np.split(rows, cuts), tids[np.r_[0, cuts]] if tids.size else []):
            self.postings.setdefault(int(tid), BitMap()).update(part_rows)
        self.published = n_rows

    def rows_for(self, term_ids: list[int], mode: str, minimum_should_match: int = 1) -> BitMap:
        """Rows that carry the query's labels: any (union), all, or at least m of them."""
        lists = [self.postings.get(t, BitMap()) for t in term_ids]
        if not lists:
            return BitMap()
        if mode == "any":
            return BitMap.union(*lists)
        if mode == "all":
            return BitMap.intersection(*lists)
        if mode == "minimum_should_match":
            if minimum_should_match <= 1:
                return BitMap.union(*lists)
            if minimum_should_match > len(lists):
                return BitMap()
            rows = np.concatenate([np.asarray(b.to_array(), np.uint32) for b in lists])
            uniq, counts = np.unique(rows, return_counts=True)
            return BitMap(uniq[counts >= minimum_should_match])
        raise InvalidInput(f"keyword mode {mode!r} is not one of {MODES}")

    def labels_at(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.labels.view()[rows])  # (C, R_I)

    def document_frequency(self) -> dict[int, int]:
        return {t: len(b) for t, b in self.postings.items()}

    def close(self) -> None:
        self.labels.close()
