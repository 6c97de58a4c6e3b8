"""The fast-vector index: FAISS HNSW over L2-normalised vectors (inner product), filtered.

Entry point: :class:`FastIndex`. The float32 vectors live in an append-only row file (the
source of truth); the HNSW graph is derived from it, snapshotted to `hnsw.faiss` now and
then, and caught up from the row file on open. A filtered search passes FAISS an
IDSelectorBitmap built from the admitted rows; when the filter admits few rows, or HNSW
returns fewer than k, the admitted rows are scored exactly instead (as Lucene does).

A reader that refreshes (:meth:`FastIndex.take`) does not insert into the graph that searches
in other threads are walking: rows past the graph (the tail) are scored exactly and merged,
and once the tail exceeds :data:`TAIL_MAX` rows a copy of the graph takes them in and
replaces the old one in one assignment.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from pyroaring import BitMap

from isr.errors import CorruptIndex
from isr.plugin.config import IndexConfig
from isr.plugin.store.rowfile import RowFile

__all__ = ["FastIndex", "KnnResult"]

log = logging.getLogger("isr.index")


def _crc_file(path: Path) -> int | None:
    """The recorded checksum of the graph snapshot; None: none recorded; -1: unreadable
    (which fails every comparison: the snapshot is not trusted)."""
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return -1


GATHER_MAX = 4096  # admitted sets up to this size are gathered; larger ones scanned in place
TAIL_MAX = 20_000  # rows a refreshing reader scores exactly before it rebuilds the graph aside


@dataclass(frozen=True)
class KnnResult:
    rows: np.ndarray  # (k',) int64, best first
    scores: np.ndarray  # (k',) float32
    method: str  # "hnsw", "hnsw+exact" or "exact"


def _new_hnsw(config: IndexConfig) -> faiss.Index:
    d, m = config.d_fast, config.hnsw_m
    if config.fast_storage == "sq8":
        index = faiss.IndexHNSWSQ(
            d, faiss.ScalarQuantizer.QT_8bit_uniform, m, faiss.METRIC_INNER_PRODUCT
        )
        # components of unit vectors lie in [-1, 1]: fix the range rather than learn it
        index.train(np.stack([-np.ones(d, np.float32), np.ones(d, np.float32)]))
    else:
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = config.hnsw_ef_construction
    return index


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (ties broken by position)."""
    if k < scores.shape[0]:
        part = np.argpartition(-scores, k - 1)[:k]
    else:
        part = np.arange(scores.shape[0])
    return part[np.lexsort((part, -scores[part]))]


class FastIndex:
    VECTORS = "fast.f32"
    HNSW = "hnsw.faiss"
    HNSW_CRC = "hnsw.faiss.crc"

    def __init__(self, path: Path, config: IndexConfig, n_rows: int, readonly: bool = False):
        self.path = path
        self.config = config
        self.readonly = readonly
        self.damaged_snapshot = False
        self.vectors = RowFile(path / self.VECTORS, np.float32, (config.d_fast,), n_rows, readonly)
        self.hnsw = self._load_hnsw(n_rows)
        self._worker: threading.Thread | None = None
        self._failed: BaseException | None = None
        self.published = 0
        self.publish(n_rows)
        self.snapshot_rows = self.hnsw.ntotal if (path / self.HNSW).exists() else 0

    def _load_hnsw(self, n_rows: int) -> faiss.Index:
        file = self.path / self.HNSW
        if file.exists():
            crc = _crc_file(self.path / self.HNSW_CRC)
            if crc is not None and crc != zlib.crc32(file.read_bytes()):
                # derived data: a damaged snapshot is rebuilt from the vectors, not trusted
                log.warning(
                    "%s fails its checksum; rebuilding the graph from %s", file, self.VECTORS
                )
                self.damaged_snapshot = True
                return _new_hnsw(self.config)
            try:
                index = faiss.read_index(str(file))
            except RuntimeError as e:
                raise CorruptIndex(f"{file}: unreadable FAISS index ({e})") from e
            if index.d == self.config.d_fast and index.ntotal <= n_rows:
                return index
        # no snapshot, or one ahead of the committed rows: rebuild from the vectors
        return _new_hnsw(self.config)

    # -- writes --------------------------------------------------------------------------
    def append(self, x: np.ndarray) -> None:
        self.vectors.append(x)  # (B, d_fast)

    def publish(self, n_rows: int, wait: bool = True) -> None:
        """Add committed rows [ntotal, n_rows) to the HNSW graph, making them searchable.

        wait=False inserts them on a background thread (FAISS releases the GIL), so a bulk
        load overlaps graph insertion with preparing its next batches; every later use of
        the graph (search, exact scan of its storage, snapshot, the next publish, close)
        waits for it first. The rows are copied out before the thread starts, so appends to
        the vector file may go on meanwhile.
        """
        self.wait()
        start = self.hnsw.ntotal
        if n_rows <= start:
            self.published = n_rows
            return
        x = self.vectors.view()[start:n_rows]  # (n, d_fast), a view of the vector file
        if wait:
            self._insert(np.ascontiguousarray(x), n_rows)
            return
        x = np.array(x)  # a copy: appends may remap the file while the thread reads
        self._worker = threading.Thread(target=self._background, args=(x, n_rows), daemon=True)
        self._worker.start()

    def _insert(self, x: np.ndarray, n_rows: int) -> None:
        for i in range(0, x.shape[0], 65_536):
            self.hnsw.add(x[i : i + 65_536])
        self.published = n_rows

    def _background(self, x: np.ndarray, n_rows: int) -> None:
        try:
            self._insert(x, n_rows)
        except BaseException as e:  # handed to the thread that waits
            self._failed = e

    def wait(self) -> None:
        """Block until a background insertion has finished; re-raise what it raised."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.join()
        failed, self._failed = self._failed, None
        if failed is not None:
            raise CorruptIndex(
                f"{self.path}: inserting into the HNSW graph failed ({failed}); reopen the "
                "index to rebuild the graph from the committed vectors"
            ) from failed

    def snapshot(self) -> None:
        """Persist the graph atomically (a crash keeps the previous snapshot)."""
        self.wait()
        tmp = self.path / (self.HNSW + ".tmp")
        faiss.write_index(self.hnsw, str(tmp))
        with open(tmp, "rb") as f:
            crc = zlib.crc32(f.read())
            os.fsync(f.fileno())
        # the checksum goes first: a crash between the two renames leaves a snapshot that
        # fails it, which costs a rebuild, never a wrong graph
        crc_tmp = self.path / (self.HNSW_CRC + ".tmp")
        crc_tmp.write_text(f"{crc}\n")
        os.replace(crc_tmp, self.path / self.HNSW_CRC)
        os.replace(tmp, self.path / self.HNSW)
        self.snapshot_rows = self.hnsw.ntotal

    def take(self, n_rows: int) -> None:
        """Reader: make committed rows up to n_rows searchable without touching the graph
        searches are using (see the module docstring)."""
        self.vectors.grow(n_rows)
        graph = self.hnsw
        if n_rows - graph.ntotal > TAIL_MAX:
            new = faiss.clone_index(graph)
            x = np.ascontiguousarray(self.vectors.view()[graph.ntotal : n_rows])
            for i in range(0, x.shape[0], 65_536):
                new.add(x[i : i + 65_536])
            self.hnsw = new  # one assignment: a search holds the graph it started with
        self.published = n_rows

    # -- reads ---------------------------------------------------------------------------
    def search(
        self,
        q: np.ndarray,
        k: int,
        ef: int,
        allowed: BitMap | None,
        exact_threshold: int,
        n_rows: int | None = None,
    ) -> KnnResult:
        """Top-k rows < n_rows (the caller's snapshot; default: all published) by inner
        product with q (d_fast,), restricted to `allowed` when given."""
        self.wait()
        n = self.published if n_rows is None else min(n_rows, self.published)
        graph = self.hnsw  # the one this search walks, even if a refresh swaps it
        g = min(graph.ntotal, n)
        if allowed is None and graph.ntotal > n:
            allowed = BitMap(range(n))
        if allowed is not None and len(allowed) <= max(k, exact_threshold):
            return self.exact(q, k, allowed, n)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(ef, k)
        bitmap = None
        if allowed is not None:
            in_graph = allowed & BitMap(range(g)) if allowed.max() >= g else allowed
            bitmap = self._bitmap(in_graph, g)
            params.sel = faiss.IDSelectorBitmap(bitmap.shape[0], faiss.swig_ptr(bitmap))
        D, I = graph.search(q.reshape(1, -1).astype(np.float32), k, params=params)
        del bitmap  # the selector points into it; keep it alive until the search returned
        found = I[0] >= 0
        rows, scores = I[0][found].astype(np.int64), D[0][found].astype(np.float32)
        method = "hnsw"
        if g < n:  # the tail a refreshing reader has not put into the graph: exact
            tail = np.arange(g, n, dtype=np.int64)
            if allowed is not None:
                tail = np.asarray((allowed & BitMap(range(g, n))).to_array(), dtype=np.int64)
            if tail.size:
                ts = (self.vectors.view()[tail] @ q.astype(np.float32)).astype(np.float32)
                rows, scores = np.concatenate([rows, tail]), np.concatenate([scores, ts])
                top = _topk(scores, k)
                rows, scores, method = rows[top], scores[top], "hnsw+tail"
        expected = min(k, n if allowed is None else len(allowed))
        if rows.shape[0] < expected:
            res = self.exact(q, k, allowed, n)
            return KnnResult(res.rows, res.scores, "hnsw+exact")
        return KnnResult(rows, scores, method)

    def _bitmap(self, allowed: BitMap, g: int) -> np.ndarray:
        """The admitted rows (< g) as FAISS's IDSelectorBitmap wants them: bit r of byte r // 8."""
        mask = np.zeros(g, dtype=bool)
        mask[np.asarray(allowed.to_array(), dtype=np.int64)] = True
        return np.packbits(mask, bitorder="little")

    def exact(
        self, q: np.ndarray, k: int, allowed: BitMap | None, n_rows: int | None = None
    ) -> KnnResult:
        """Exact top-k over the admitted rows < n_rows (float32 vectors).

        Small sets are gathered from the vector file; larger ones are scanned in place by
        FAISS's flat storage under the same bitmap selector (no copy of the admitted vectors).
        """
        self.wait()
        n = self.published if n_rows is None else min(n_rows, self.published)
        if allowed is not None and len(allowed) and allowed.max() >= n:
            allowed = allowed & BitMap(range(n))
        q32 = np.ascontiguousarray(q, dtype=np.float32)
        graph = self.hnsw
        if (
            self.config.fast_storage == "flat"
            and graph.ntotal == n
            and (allowed is None or len(allowed) > GATHER_MAX)
        ):
            storage = faiss.downcast_index(graph.storage)  # IndexFlatIP over the same rows
            params = faiss.SearchParameters()
            bitmap = None
            if allowed is not None:
                bitmap = self._bitmap(allowed, n)
                params.sel = faiss.IDSelectorBitmap(bitmap.shape[0], faiss.swig_ptr(bitmap))
            D, I = storage.search(q32.reshape(1, -1), k, params=params)
            del bitmap
            found = I[0] >= 0
            return KnnResult(I[0][found].astype(np.int64), D[0][found].astype(np.float32), "exact")
        view = self.vectors.view()[:n]
        if allowed is None:
            rows = np.arange(view.shape[0], dtype=np.int64)
            scores = view @ q32
        else:
            rows = np.asarray(allowed.to_array(), dtype=np.int64)
            rows = rows[rows < n]
            scores = view[rows] @ q32 if rows.size else np.empty(0, np.float32)
        top = _topk(scores, k)
        return KnnResult(rows[top], scores[top].astype(np.float32), "exact")

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors.view()[rows])  # (C, d_fast)

    def nbytes(self) -> dict[str, int]:
        file = self.path / self.HNSW
        graph = file.stat().st_size if file.exists() else 0
        return {"fast_vectors": self.vectors.nbytes(), "hnsw": graph}

    def close(self) -> None:
        self.wait()
        self.vectors.close()
