"""The compressed kNN's copy: the fast vectors' 4-bit PQ codes in one FastScan list per label.

Entry point: :class:`KeywordPQ`. Each row's code is held once, in row order; each keyword label
has a FAISS IndexPQFastScan over the codes of the rows storing it (at any of their R_I ranks),
so a row sits in R_I lists. A keyword-screened query scans only its labels' lists, 32 codes at a
time in SIMD registers, for the best rows by PQ estimate, which the fast index then filters by
the query's admitted rows and rescores with their float32 vectors (``FastIndex.compressed``).
The scan's cost follows the rows the screen admits, not the index size: where one PQ copy of
every row (FastScan takes no selector) had to be scanned whole for a window of ~12K rows at 1M
(5.8 ms on an AVX2 core), the screened lists cost ~1.6 ms (BENCHMARKS.md, issue 16, session 8).

Derived data, in memory only: built from the row file and the label file when an index of
:data:`~isr.plugin.embedded.fast_index.COMPRESSED_MIN_ROWS` opens (1M rows: a few seconds) and
rebuilt aside when the rows past it exceed the fast index's tail bound. Every process trains its
own product quantiser (seeded sample), so the estimates of one copy are comparable with each
other; nothing of it is written to disk. d / 2 sub-quantisers of 2 dimensions at 4 bits: 64
bytes a list entry at d 256, so R_I = 15 labels cost 960 bytes a row (the 32-byte codes of d / 4
sub-quantisers lost a third of the kNN's recall at the same speed: session 8's note).
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np

__all__ = ["KeywordPQ"]

TRAIN_ROWS = 65_536  # rows the product quantiser is trained on
ENCODE_BLOCK = 65_536


class KeywordPQ:
    """Per-label FastScan lists over the PQ codes of rows [0, rows)."""

    def __init__(
        self,
        base: faiss.IndexPQ,
        codes: np.ndarray,
        lists: dict[int, tuple[np.ndarray, faiss.IndexPQFastScan]],
    ) -> None:
        self.base = base  # trained, empty: the quantiser every list shares
        self.codes = codes  # (rows, code_size) uint8, row order
        self.lists = lists  # label id -> (rows ascending int64, FastScan index over them)
        self.rows = int(codes.shape[0])
        self.entries = sum(int(r.shape[0]) for r, _ in lists.values())

    @staticmethod
    def supports(d: int) -> bool:
        return d % 2 == 0 and d > 0

    @classmethod
    def build(
        cls, vectors: np.ndarray, labels: np.ndarray, n: int, seed: int = 0
    ) -> KeywordPQ | None:
        """A copy of rows [0, n): vectors (>= n, d) float32, labels (>= n, R_I) int32 (-1 pads).
        None where d is odd or n is 0."""
        d = int(vectors.shape[1])
        if not cls.supports(d) or n == 0:
            return None
        base = faiss.IndexPQ(d, d // 2, 4, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        take = np.sort(rng.choice(n, min(n, TRAIN_ROWS), replace=False))
        base.train(np.ascontiguousarray(vectors[take], dtype=np.float32))
        codes = _encode(base, vectors, 0, n)
        return cls(base, codes, _lists(base, codes, labels[:n]))

    def extended(self, vectors: np.ndarray, labels: np.ndarray, n: int) -> KeywordPQ:
        """A new copy of rows [0, n) with this one's quantiser: only rows past it are encoded,
        every list is re-packed from the codes (this copy is left as it is for the searches
        that hold it)."""
        if n <= self.rows:
            return self
        codes = np.concatenate([self.codes, _encode(self.base, vectors, self.rows, n)])
        return KeywordPQ(self.base, codes, _lists(self.base, codes, labels[:n]))

    def list_rows(self, labels: Sequence[int]) -> int:
        """Entries the lists of these labels hold (rows in several of them count each time)."""
        return sum(int(self.lists[t][0].shape[0]) for t in set(labels) if t in self.lists)

    def search(
        self, q: np.ndarray, labels: Sequence[int], want: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """q (1, d) float32 -> (rows, PQ estimates) of up to ``want`` best distinct rows of
        each label's list, all lists merged (a row in several lists once)."""
        rows, est = [], []
        for t in sorted(set(labels)):
            entry = self.lists.get(t)
            if entry is None:
                continue
            ids, index = entry
            D, I = index.search(q, min(want, index.ntotal))
            ok = I[0] >= 0
            rows.append(ids[I[0][ok]])
            est.append(D[0][ok])
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        r, e = np.concatenate(rows), np.concatenate(est)
        r, first = np.unique(r, return_index=True)  # a row's estimate is the same in each list
        return r, e[first]

    def nbytes(self) -> int:
        """Memory held: the row codes, the packed lists and their row ids."""
        code = int(self.codes.shape[1]) if self.codes.ndim == 2 else 0
        return self.codes.nbytes + self.entries * (code + 8)


def _encode(base: faiss.IndexPQ, vectors: np.ndarray, start: int, stop: int) -> np.ndarray:
    out = np.empty((stop - start, base.pq.code_size), np.uint8)
    for i in range(start, stop, ENCODE_BLOCK):
        j = min(i + ENCODE_BLOCK, stop)
        out[i - start : j - start] = base.pq.compute_codes(
            np.ascontiguousarray(vectors[i:j], dtype=np.float32)
        )
    return out


def _lists(
    base: faiss.IndexPQ, codes: np.ndarray, labels: np.ndarray
) -> dict[int, tuple[np.ndarray, faiss.IndexPQFastScan]]:
    """label -> (its rows ascending, a FastScan index of their codes in that order)."""
    n, r_i = labels.shape
    flat = np.asarray(labels, dtype=np.int64).reshape(-1)
    rows = np.repeat(np.arange(n, dtype=np.int64), r_i)
    keep = flat >= 0
    flat, rows = flat[keep], rows[keep]
    order = np.argsort(flat, kind="stable")  # stable: each label's rows stay ascending
    flat, rows = flat[order], rows[order]
    cuts = np.flatnonzero(np.diff(flat)) + 1
    out: dict[int, tuple[np.ndarray, faiss.IndexPQFastScan]] = {}
    for part, label in zip(np.split(rows, cuts), flat[np.r_[0, cuts]] if flat.size else []):
        ids = np.unique(part)  # a label stored twice by one row: once
        flat_codes = faiss.clone_index(base)
        flat_codes.add_sa_codes(np.ascontiguousarray(codes[ids]))
        out[int(label)] = (ids, faiss.IndexPQFastScan(flat_codes))  # packed for FastScan
    return out
