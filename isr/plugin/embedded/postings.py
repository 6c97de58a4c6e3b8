"""Keyword postings: each document's top R_I labels, and (label, rank) -> rows roaring bitmaps.

Entry point: :class:`KeywordPostings`. A document's labels are stored best first as term ids in
an append-only (N, R_I) int32 row file (-1 pads); the bitmaps are derived from it in memory, on
open and as batches commit, one per label and rank, so a query may screen with any R_I up to
the stored one (``r_i=``) without re-indexing. Term strings <-> ids live in the document table.
"""

from __future__ import annotations

import array
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
        self.postings: dict[int, BitMap] = {}  # term -> rows storing it at any rank
        self.by_rank: dict[int, list[BitMap]] = {}  # term -> rows storing it at rank r, r < R_I
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
        ranks = np.tile(np.arange(self.r_i, dtype=np.int64), n_rows - self.published)
        tids = block.reshape(-1)
        keep = tids >= 0
        rows, tids, ranks = rows[keep], tids[keep].astype(np.int64), ranks[keep]
        key = tids * self.r_i + ranks
        order = np.argsort(key, kind="stable")
        rows, key = rows[order], key[order]
        cuts = np.flatnonzero(np.diff(key)) + 1
        for part_rows, k in zip(np.split(rows, cuts), key[np.r_[0, cuts]] if key.size else []):
            tid, rank = divmod(int(k), self.r_i)
            # from a buffer: pyroaring iterates a numpy array element by element (6x slower)
            part = BitMap(array.array("I", part_rows.tobytes()))
            per = self.by_rank.get(tid)
            if per is None:
                per = self.by_rank[tid] = [BitMap() for _ in range(self.r_i)]
                self.postings[tid] = BitMap()
            per[rank] |= part
            self.postings[tid] |= part
        self.published = n_rows

    def _check_r_i(self, r_i: int | None) -> int:
        if r_i is None:
            return self.r_i
        if isinstance(r_i, bool) or not isinstance(r_i, int) or not 1 <= r_i <= self.r_i:
            raise InvalidInput(f"keywords.r_i must be an integer in [1, {self.r_i}] (the labels "
                               f"stored per document), got {r_i!r}")  # fmt: skip
        return r_i

    def term_rows(self, term_id: int, r_i: int | None = None) -> BitMap:
        """Rows storing the term among their top ``r_i`` labels (None: all stored)."""
        r = self._check_r_i(r_i)
        if r == self.r_i:
            return self.postings.get(term_id, BitMap())
        per = self.by_rank.get(term_id)
        return BitMap() if per is None else BitMap.union(*per[:r])

    def rows_for(
        self, term_ids: list[int], mode: str, minimum_should_match: int = 1, r_i: int | None = None
    ) -> BitMap:
        """Rows that carry the query's labels among their top ``r_i``: any (union), all, or at
        least m of them."""
        lists = [self.term_rows(t, r_i) for t in term_ids]
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

    def document_frequency(self, r_i: int | None = None) -> dict[int, int]:
        r = self._check_r_i(r_i)
        if r == self.r_i:
            return {t: len(b) for t, b in self.postings.items()}
        return {t: sum(len(b) for b in per[:r]) for t, per in self.by_rank.items()}

    def close(self) -> None:
        self.labels.close()
