"""The fast-vector index: FAISS HNSW over L2-normalised vectors (inner product), filtered.

Entry point: :class:`FastIndex`. The float32 vectors live in an append-only row file (the
source of truth); the HNSW graph is derived from it, snapshotted to `hnsw.faiss` now and
then, and caught up from the row file on open.

A filtered search is planned per query (:meth:`FastIndex.plan`) from the admitted count and
the index size by a cost model measured on this machine (:class:`KnnCost`, calibrated on the
index itself and recorded in `knn_cost.json` beside it):

- ``gather``: few admitted rows: their float32 vectors are scored in place in the row file's
  memory map by FAISS (exact);
- ``exact``: the graph's own storage (float32 or sq8 codes, in memory) is scanned in place by
  FAISS under an IDSelectorBitmap of the admitted rows; no admitted row is copied. Over sq8
  codes the best ``2k + 64`` are rescored with their float32 vectors, so the returned scores
  are exact and the ranking is exact unless a true top-k row lost more to quantization than
  the oversampled window's margin;
- ``compressed`` (keyword-screened queries): the screen's labels' lists of a 4-bit PQ copy of
  the fast vectors (:class:`~isr.plugin.embedded.keyword_pq.KeywordPQ`, one FastScan list per
  label, built in memory once the index holds :data:`COMPRESSED_MIN_ROWS`) are scanned for their
  best ``max(COMPRESSED_KEEP_FACTOR * k, COMPRESSED_MIN_KEEP)`` rows by PQ estimate; the
  admitted ones among them are rescored with their float32 vectors. Its cost follows the
  screen's rows, not the index size (1M rows, ~13% admitted: recall@200 against the exact top
  0.94 at ~2.5 ms where an unfiltered PQ scan of every row took ~8 ms for 0.80: BENCHMARKS.md,
  issue 16, session 8). Planned only where the admitted rows are most of the lists' rows
  (a narrow extra filter would leave the lists' best rows mostly rejected); rows past the copy
  (fewer than :data:`TAIL_MAX`) are scored exactly; when fewer than k admitted rows come back
  it scans exactly (``compressed+exact``);
- ``hnsw``: the graph under the same selector. A filtered graph loses recall as the filter
  narrows (at 1M and an 18% filter, R@10 0.63 against exact at ef 1000), so the planner only
  takes it when the filter admits at least ``GRAPH_MIN_SHARE`` of the index and it is the
  cheaper; when HNSW returns fewer than k the admitted rows are scored exactly instead.

An explicit ``exact_threshold`` (the older rule: exact up to that many admitted rows, HNSW
above) or ``method`` overrides the plan.

A reader that refreshes (:meth:`FastIndex.take`) does not insert into the graph that searches
in other threads are walking: rows past the graph (the tail) are gathered and scored exactly
by every method and merged, and once the tail exceeds :data:`TAIL_MAX` rows a copy of the
graph takes them in and replaces the old one in one assignment. Every read takes the caller's
snapshot row count, so rows a writer published after it are never returned.
"""

from __future__ import annotations

import array
import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import faiss
import numpy as np
from pyroaring import BitMap

from isr.errors import CorruptIndex, InvalidInput
from isr.plugin.backend import KNN_METHODS
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.keyword_pq import KeywordPQ
from isr.plugin.store.durable import atomic_write_bytes
from isr.plugin.store.rowfile import RowFile

__all__ = ["METHODS", "FastIndex", "KnnCost", "KnnResult", "fit_cost"]

METHODS = KNN_METHODS  # gather, exact, compressed, hnsw (one list, in isr.plugin.backend)
GRAPH_MIN_SHARE = 0.5  # narrower filters lose too much recall in the graph (module doc)
CALIBRATE_MIN_ROWS = 2000  # smaller indexes keep the defaults (every method is cheap there)
SCAN_PER_GATHER = (
    0.5  # the sanity rule of fit_cost: a scanned row costs at most this of a gathered one
)
GATHER_CALIBRATE_MAX = 50_000  # admitted sets gather is timed on (larger: far past its range)
COMPRESSED_MIN_ROWS = 50_000  # smaller indexes: the exact scan takes ~1 ms or less (no copy)
COMPRESSED_KEEP_FACTOR = 5  # rows the lists' PQ estimates keep for rescoring: 5k ...
COMPRESSED_MIN_KEEP = 1000  # ... and at least these (module doc)
COMPRESSED_MIN_COVER = 0.5  # planned where admitted >= this share of the labels' list entries


@dataclass(frozen=True)
class KnnCost:
    """Per-query cost model of the kNN methods, in microseconds and nanoseconds.

    gather: ``gather_us + admitted * gather_row_ns``; exact (an in-place scan under a bitmap,
    which walks every row of the index): ``scan_us + n * scan_bit_ns + admitted *
    scan_row_ns``; hnsw: ``graph_us + graph_ns * ef / share``, fitted on unfiltered searches
    at two ef (the 1 / share factor, for the walk past rejected nodes, is a conservative
    guess: the graph is only considered for shares >= GRAPH_MIN_SHARE); compressed (the screen's
    label lists scanned, the best rows rescored): ``compressed_us + admitted *
    compressed_row_ns`` (``compressed_bit_ns``, per index row, is 0 since session 8). The defaults were
    measured on the project's 2-core machine (100K x 256-d, sq8 storage, one thread, load
    ~1); :meth:`FastIndex.calibrate` replaces them with figures measured on the index itself.
    """

    gather_us: float = 30.0
    gather_row_ns: float = 200.0
    scan_us: float = 20.0
    scan_bit_ns: float = 1.0
    scan_row_ns: float = 50.0
    graph_us: float = 100.0
    graph_ns: float = 5000.0
    compressed_us: float = 600.0
    compressed_bit_ns: float = 0.0
    compressed_row_ns: float = 12.0
    # the exact scan's line as measured, before the sanity rule capped it (0: not capped):
    # the rule guards the choice between gather and the scan; against the compressed scan
    # the measured line is what the scan costs (session 8: capped at 94 ns a row against a
    # measured 240 at 100K on an AVX2 EPYC, it read 2.1 ms for a 4.2 ms scan)
    scan_measured_bit_ns: float = 0.0
    scan_measured_row_ns: float = 0.0
    rows: int = 0  # index size it was measured at (0: the defaults)
    storage: str = ""
    date: str = ""
    load_avg: float = 0.0
    repeat: int = 0  # rounds each point's minimum was taken over

    def predict(self, method: str, n: int, admitted: int, ef: int, measured: bool = False) -> float:
        """Predicted microseconds of one query by ``method``; ``measured``: the exact scan's
        line as measured, not as capped by fit_cost's sanity rule."""
        if method == "exact" and measured and self.scan_measured_row_ns > 0:
            return (n * self.scan_measured_bit_ns + admitted * self.scan_measured_row_ns) / 1e3
        if method == "gather":
            return self.gather_us + admitted * self.gather_row_ns / 1e3
        if method == "exact":
            return self.scan_us + (n * self.scan_bit_ns + admitted * self.scan_row_ns) / 1e3
        if method == "compressed":
            return (
                self.compressed_us
                + (n * self.compressed_bit_ns + admitted * self.compressed_row_ns) / 1e3
            )
        share = max(admitted, 1) / max(n, 1)
        return self.graph_us + self.graph_ns * ef / share / 1e3

    @classmethod
    def load(cls, file: Path) -> KnnCost | None:
        try:
            raw = json.loads(file.read_text())
            return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        except (OSError, ValueError, TypeError):
            return None  # absent or unreadable: a derived file, the defaults stand in


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of t over x, both clamped at 0 (costs are positive)."""
    x = np.array([p[0] for p in points], np.float64)
    t = np.array([p[1] for p in points], np.float64)
    if len(points) < 2 or np.ptp(x) == 0:
        return float(t.min()), 0.0
    slope = max(float(np.polyfit(x, t, 1)[0]), 0.0)
    return max(float(np.mean(t - slope * x)), 0.0), slope


def fit_cost(n: int, points: Sequence[tuple[str, int, float]]) -> KnnCost:
    """The cost model of an index of n rows from measured (method, x, microseconds) points:
    x is the admitted count for "gather", "exact" and "compressed", ef for "hnsw" (unfiltered).

    Least-squares lines, and one sanity rule: an admitted row costs the in-place scan at most
    :data:`SCAN_PER_GATHER` of what gathering it costs. Gather copies each row out of the
    memory map at random and reads the copy again to multiply it; the scan reads it once, in
    place, in order (flat: the same 4d bytes, sq8: d bytes), so it moves a third of gather's
    bytes or less (quiet machine, 100K x 256: 54 ns against 190 ns a row, sq8). A steeper
    scan line is load from elsewhere landing on the wide scans: the slope is capped and the
    intercept re-read as the lowest line of that slope under the points (load only adds
    time). Without it one such burst made the planner gather for every query at 100K, 1.27x
    slower than the scan (BENCHMARKS.md, issue 16).
    """
    by: dict[str, list[tuple[int, float]]] = {m: [] for m in METHODS}
    for method, x, t in points:
        by[method].append((x, t))
    d = KnnCost()
    g_us, g_row = _line(by["gather"]) if by["gather"] else (d.gather_us, d.gather_row_ns / 1e3)
    s_us, s_row = (
        _line(by["exact"]) if by["exact"] else (d.scan_bit_ns * n / 1e3, d.scan_row_ns / 1e3)
    )
    raw_us, raw_row = 0.0, 0.0
    if s_row > SCAN_PER_GATHER * g_row and by["exact"] and by["gather"]:
        raw_us, raw_row = s_us, s_row
        s_row = SCAN_PER_GATHER * g_row
        s_us = max(min(t - s_row * x for x, t in by["exact"]), 0.0)
    h_us, h_ef = _line(by["hnsw"]) if by["hnsw"] else (d.graph_us, d.graph_ns / 1e3)
    if by["compressed"]:
        c_fixed, c_row = _line(by["compressed"])
        c_bit = 0.0  # the lists' scan follows the admitted rows (module doc)
    else:
        c_fixed, c_bit, c_row = d.compressed_us, d.compressed_bit_ns, d.compressed_row_ns / 1e3
    return KnnCost(
        gather_us=g_us,
        gather_row_ns=g_row * 1e3,
        scan_us=0.0,
        scan_bit_ns=s_us * 1e3 / max(n, 1),  # at one n the call and the bitmap walk are one
        scan_row_ns=s_row * 1e3,
        scan_measured_bit_ns=raw_us * 1e3 / max(n, 1),
        scan_measured_row_ns=raw_row * 1e3,
        graph_us=h_us,
        graph_ns=h_ef * 1e3,
        compressed_us=c_fixed,
        compressed_bit_ns=c_bit,
        compressed_row_ns=c_row * 1e3,
        rows=n,
    )


log = logging.getLogger("isr.index")


def _crc_file(path: Path) -> frozenset[int] | None:
    """The checksums a derived index file (the graph snapshot, the PQ copy) may have: one, or
    two while a new file replaces the old (see :meth:`FastIndex._write_checked`); None: none
    recorded; empty: unreadable (which matches no file: the file is not trusted)."""
    try:
        return frozenset(int(x) for x in path.read_text().split())
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError):
        return frozenset()


TAIL_MAX = 20_000  # rows a refreshing reader scores exactly before it rebuilds the graph aside


@dataclass(frozen=True)
class KnnResult:
    rows: np.ndarray  # (k',) int64, best first
    scores: np.ndarray  # (k',) float32
    method: str  # "gather", "exact", "compressed", "compressed+exact", "hnsw", "hnsw+tail", "hnsw+exact"


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


def _new_compressed(d: int) -> faiss.Index | None:
    """The PQ copy's index: d / 4 sub-quantisers of 4 dimensions, 4 bits each (16 bytes per
    64 dimensions; d not a multiple of 4: d / 2 of 2 dimensions; odd d: None)."""
    if d % 2:
        return None
    m = d // 4 if d % 4 == 0 else d // 2
    return faiss.IndexPQFastScan(d, m, 4, faiss.METRIC_INNER_PRODUCT)


def _window(k: int) -> int:
    """Rows an sq8 estimate keeps for the float32 rescoring of a top-k: ``2k + 64``."""
    return 2 * k + 64


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
    COST = "knn_cost.json"
    STALE = ("pq.faiss", "pq.faiss.crc")  # derived files of older versions a writer removes

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
        self._cost_stamp = self._stamp()
        self.cost = KnnCost.load(path / self.COST) or KnnCost()
        self.pq: KeywordPQ | None = None  # the compressed copy (build_compressed), or None
        self.labels: RowFile | None = None  # the rows' label ids, set by the owning index

    def build_compressed(self, seed: int = 0) -> bool:
        """Bring the compressed copy up to every published row: built (its quantiser trained
        on a seeded sample) or extended aside and swapped in by one assignment, so searches in
        other threads keep the copy they hold. False where there is none (no labels attached,
        odd d_fast, no rows)."""
        self.wait()
        n = self.published
        if self.labels is None or n == 0 or not KeywordPQ.supports(self.config.d_fast):
            return False
        vectors, labels = self.vectors.view(), self.labels.view()  # the owner grew both
        if labels.shape[0] < n:
            return False
        pq = self.pq
        self.pq = (
            KeywordPQ.build(vectors, labels, n, seed)
            if pq is None
            else pq.extended(vectors, labels, n)
        )
        return self.pq is not None

    def _load_hnsw(self, n_rows: int) -> faiss.Index:
        file = self.path / self.HNSW
        if file.exists():
            crc = _crc_file(self.path / self.HNSW_CRC)
            if crc is not None and zlib.crc32(file.read_bytes()) not in crc:
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
        self._write_checked(self.hnsw, self.HNSW, self.HNSW_CRC)
        self.snapshot_rows = self.hnsw.ntotal
        for old in self.STALE:  # an older version's on-disk PQ copy: unused since session 8
            (self.path / old).unlink(missing_ok=True)
        self.refresh_compressed()
        if self.published >= max(CALIBRATE_MIN_ROWS, 2 * self.cost.rows):
            self.calibrate()  # the index doubled since the last measurement (or never had one)

    def refresh_compressed(self) -> None:
        """Build the compressed copy once the index holds COMPRESSED_MIN_ROWS, and rebuild it
        aside once more than TAIL_MAX rows lie past it (they are scored exactly until then)."""
        pq = self.pq
        n = self.published
        if n >= COMPRESSED_MIN_ROWS and (pq is None or n - pq.rows > TAIL_MAX):
            self.build_compressed()

    def _write_checked(self, index: faiss.Index, name: str, crc_name: str) -> None:
        """Write a derived FAISS index (the graph) and its checksum so that a crash
        at any step leaves a file its checksum file accepts: the checksum file first lists the
        old file's checksum and the new one's, then the file is renamed into place, then the
        list is cut to the new one. (One rename after the other left a window in which a kill
        kept the new file with the old checksum: a needless rebuild, and a check that failed.)
        A reader finds a file the list accepts at every step."""
        tmp = self.path / (name + ".tmp")
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as f:
            crc = zlib.crc32(f.read())
            os.fsync(f.fileno())
        old = _crc_file(self.path / crc_name) if (self.path / name).exists() else None
        both = sorted((old or frozenset()) | {crc})
        atomic_write_bytes(self.path / crc_name, "".join(f"{c}\n" for c in both).encode())
        os.replace(tmp, self.path / name)
        atomic_write_bytes(self.path / crc_name, f"{crc}\n".encode())  # fsyncs the directory

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
        stamp = self._stamp()
        if stamp != self._cost_stamp:  # the writer recalibrated (the index doubled)
            self._cost_stamp = stamp
            self.cost = KnnCost.load(self.path / self.COST) or self.cost
        self.refresh_compressed()  # past TAIL_MAX rows beyond the copy: rebuilt aside

    def _stamp(self, name: str = COST) -> tuple[int, int] | None:
        try:
            st = (self.path / name).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    # -- reads ---------------------------------------------------------------------------
    def plan(
        self,
        k: int,
        ef: int,
        admitted: int | None,
        n_rows: int | None = None,
        labels: Sequence[int] | None = None,
    ) -> str:
        """The cheapest method for a query admitting ``admitted`` rows (None: every row) of
        the first n_rows (default: all published); ``labels``: the keyword screen's label ids
        when the admitted rows lie in their lists (the compressed method needs them)."""
        n = self._rows(n_rows)
        m = n if admitted is None else admitted
        methods = ["gather", "exact"]
        if m >= GRAPH_MIN_SHARE * n:
            methods.append("hnsw")
        e = max(ef, k)
        best = min(methods, key=lambda x: self.cost.predict(x, n, m, e))
        if self._compressed_fits(m, n, labels):
            # against the compressed scan, the exact scan at its measured cost (KnnCost)
            other = self.cost.predict(best, n, m, e, measured=True)
            if self.cost.predict("compressed", n, m, e) < other:
                return "compressed"
        return best

    def _compressed_fits(self, m: int, n: int, labels: Sequence[int] | None) -> bool:
        """The compressed copy can answer: it exists, covers all but TAIL_MAX of the rows, and
        the admitted rows are at least COMPRESSED_MIN_COVER of the screen's list entries."""
        pq = self.pq
        if pq is None or not labels or n - pq.rows > TAIL_MAX:
            return False
        return m >= COMPRESSED_MIN_COVER * pq.list_rows(labels)

    def search(
        self,
        q: np.ndarray,
        k: int,
        ef: int,
        allowed: BitMap | None,
        exact_threshold: int | None = None,
        method: str | None = None,
        n_rows: int | None = None,
        labels: Sequence[int] | None = None,
    ) -> KnnResult:
        """Top-k rows < n_rows (the caller's snapshot; default: all published) by inner
        product with q (d_fast,), restricted to `allowed` when given; ``labels``: the keyword
        screen's label ids when ``allowed`` lies within their rows (see :meth:`plan`).

        method: one of :data:`METHODS` to force it; else exact_threshold, when given, picks
        exact up to that many admitted rows and HNSW above; else :meth:`plan` decides.
        """
        self.wait()
        n = self._rows(n_rows)
        allowed = self._below(allowed, n)
        admitted = None if allowed is None else len(allowed)
        if method is None:
            if exact_threshold is None:
                method = self.plan(k, ef, admitted, n, labels)
            elif admitted is not None and admitted <= max(k, exact_threshold):
                method = "exact"
            else:
                method = "hnsw"
        if method not in METHODS:
            raise InvalidInput(f"knn: method {method!r} is not one of {list(METHODS)}")
        if method == "gather":
            return self.gather(q, k, allowed, n)
        if method == "exact":
            return self.exact(q, k, allowed, n)
        if method == "compressed":
            return self.compressed(q, k, allowed, n, labels)
        graph = self.hnsw  # the one this search walks, even if a refresh swaps it
        g = min(graph.ntotal, n)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(ef, k)
        keep = self._select(params, allowed, g, graph.ntotal)
        D, I = graph.search(q.reshape(1, -1).astype(np.float32), k, params=params)
        del keep  # the selector and its bitmap: alive until the search returned
        found = I[0] >= 0
        rows, scores = I[0][found].astype(np.int64), D[0][found].astype(np.float32)
        method = "hnsw"
        tail = self._tail(allowed, g, n)  # a refreshing reader's rows past the graph: exact
        if tail.size:
            ts = self._dots(tail, np.ascontiguousarray(q, dtype=np.float32))
            rows, scores = np.concatenate([rows, tail]), np.concatenate([scores, ts])
            top = _topk(scores, k)
            rows, scores, method = rows[top], scores[top], "hnsw+tail"
        expected = min(k, n if allowed is None else len(allowed))
        if rows.shape[0] < expected:
            res = self.exact(q, k, allowed, n)
            return KnnResult(res.rows, res.scores, "hnsw+exact")
        return KnnResult(rows, scores, method)

    def _rows(self, n_rows: int | None) -> int:
        return self.published if n_rows is None else min(n_rows, self.published)

    @staticmethod
    def _below(allowed: BitMap | None, n: int) -> BitMap | None:
        """The admitted rows < n (rows a writer published after the caller's snapshot out)."""
        if allowed is not None and len(allowed) and allowed.max() >= n:
            return allowed & BitMap(range(n))
        return allowed

    def _select(
        self, params: faiss.SearchParameters, allowed: BitMap | None, g: int, ntotal: int
    ) -> object:
        """Restrict ``params`` to the admitted rows < g (the rows of the graph this search
        reads); returns what must outlive the search (the swig selector holds neither a
        reference to its bitmap nor params one to it)."""
        if allowed is None and g == ntotal:
            return None  # every row of the graph
        if allowed is None:
            bitmap = np.zeros((g + 7) // 8, np.uint8)
            bitmap[: g // 8] = 0xFF
            if g % 8:
                bitmap[g // 8] = (1 << (g % 8)) - 1
        else:
            bitmap = self._bitmap(allowed, g)
        sel = faiss.IDSelectorBitmap(bitmap.shape[0], faiss.swig_ptr(bitmap))
        params.sel = sel
        return bitmap, sel

    def _bitmap(self, allowed: BitMap, g: int) -> np.ndarray:
        """The admitted rows < g as FAISS's IDSelectorBitmap wants them: bit r of byte r // 8."""
        mask = np.zeros(g, dtype=bool)
        rows = np.asarray(allowed.to_array(), dtype=np.int64)
        mask[rows[rows < g]] = True
        return np.packbits(mask, bitorder="little")

    def _tail(self, allowed: BitMap | None, g: int, n: int) -> np.ndarray:
        """The admitted rows in [g, n): a refreshing reader's rows not yet in the graph."""
        if g >= n:
            return np.empty(0, np.int64)
        if allowed is None:
            return np.arange(g, n, dtype=np.int64)
        return np.asarray((allowed & BitMap(range(g, n))).to_array(), dtype=np.int64)

    def exact(
        self, q: np.ndarray, k: int, allowed: BitMap | None, n_rows: int | None = None
    ) -> KnnResult:
        """Exact top-k over the admitted rows < n_rows: the graph's storage scanned in place.

        FAISS scans its flat (float32) or sq8 storage under a bitmap selector of the admitted
        rows, on FAISS's own (capped) threads, without copying them. Over sq8 codes the best
        2k + 64 are rescored with their float32 vectors (module doc).
        """
        self.wait()
        n = self._rows(n_rows)
        allowed = self._below(allowed, n)
        q32 = np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
        m = n if allowed is None else len(allowed)
        if m == 0:
            return KnnResult(np.empty(0, np.int64), np.empty(0, np.float32), "exact")
        graph = self.hnsw
        g = min(graph.ntotal, n)
        storage = faiss.downcast_index(graph.storage)  # the graph's vectors, same rows
        sq = self.config.fast_storage != "flat"
        window = min(m, _window(k)) if sq else min(m, k)
        rows = np.empty(0, np.int64)
        scores = np.empty(0, np.float32)
        if g > 0:
            params = faiss.SearchParameters()
            keep = self._select(params, allowed, g, graph.ntotal)
            D, I = storage.search(q32, window, params=params)
            del keep
            found = I[0] >= 0
            rows, scores = I[0][found].astype(np.int64), D[0][found].astype(np.float32)
            if sq:  # exact scores of the window, from the float32 row file
                rows = np.sort(rows)  # ascending: sequential reads, and ties broken by row
                scores = self._dots(rows, q32[0])
        tail = self._tail(allowed, g, n)
        if tail.size:  # a refreshing reader's rows past the graph: gathered
            rows = np.concatenate([rows, tail])
            scores = np.concatenate([scores, self._dots(tail, q32[0])])
        top = _topk(scores, k)
        return KnnResult(rows[top], scores[top], "exact")

    def compressed(
        self,
        q: np.ndarray,
        k: int,
        allowed: BitMap | None,
        n_rows: int | None = None,
        labels: Sequence[int] | None = None,
    ) -> KnnResult:
        """Top-k over the admitted rows < n_rows through the compressed copy (module doc): the
        lists of ``labels`` scanned for their best ``max(COMPRESSED_KEEP_FACTOR * k,
        COMPRESSED_MIN_KEEP)`` rows by PQ estimate, the admitted ones among them rescored with
        their float32 vectors, rows past the copy scored exactly. Without a copy or labels,
        or when fewer than k admitted rows come back, the exact scan answers."""
        self.wait()
        n = self._rows(n_rows)
        allowed = self._below(allowed, n)
        pq = self.pq
        if pq is None or not labels or allowed is None or len(allowed) == 0:
            return self.exact(q, k, allowed, n)
        g = min(pq.rows, n)
        q32 = np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
        want = max(COMPRESSED_KEEP_FACTOR * k, COMPRESSED_MIN_KEEP)
        rows, est = pq.search(q32, labels, want)
        inside = rows < g  # a copy newer than the caller's snapshot may hold rows past n
        rows, est = rows[inside], est[inside]
        # sorted ascending already (np.unique): roaring builds from sorted ids ~8x faster
        found = BitMap(array.array("I", rows.astype(np.uint32).tobytes()))
        found &= allowed
        if len(found) > want:  # the best `want` admitted rows by their estimates
            keep = np.isin(rows, np.frombuffer(found.to_array(), np.uint32))
            rows, est = rows[keep], est[keep]
            rows = np.sort(rows[np.argpartition(-est, want - 1)[:want]])
        else:
            rows = np.frombuffer(found.to_array(), np.uint32).astype(np.int64)  # ascending
        tail = self._tail(allowed, g, n)  # rows past the copy: scored exactly
        in_copy = len(allowed) - tail.shape[0]
        if rows.shape[0] < min(k, in_copy):  # too few admitted rows came back: scan exactly
            res = self.exact(q, k, allowed, n)
            return KnnResult(res.rows, res.scores, "compressed+exact")
        rows = np.concatenate([rows, tail])
        scores = self._dots(rows, q32[0])
        top = _topk(scores, k)
        return KnnResult(rows[top], scores[top], "compressed")

    def gather(
        self, q: np.ndarray, k: int, allowed: BitMap | None, n_rows: int | None = None
    ) -> KnnResult:
        """Exact top-k over few admitted rows < n_rows: their float32 vectors read in blocks."""
        self.wait()
        n = self._rows(n_rows)
        allowed = self._below(allowed, n)
        if allowed is None:
            rows = np.arange(n, dtype=np.int64)
        else:
            rows = np.asarray(allowed.to_array(), dtype=np.int64)
        scores = self._dots(rows, np.ascontiguousarray(q, dtype=np.float32))
        top = _topk(scores, k)
        return KnnResult(rows[top], scores[top], "gather")

    def _dots(self, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        """rows (m,) ascending -> their float32 vectors . q, (m,) float32.

        FAISS's fvec_inner_products_by_idx reads each row in place from the memory map (no
        gathered copy, one thread): 1.6-1.8x faster than gathering 1,024-row blocks for a
        torch matvec (464 / 3,000 rows of the 1M vectors: 0.11 / 0.74 ms against 0.20 /
        1.15 ms, BENCHMARKS.md, issue 16, session 3).
        """
        out = np.empty((1, rows.shape[0]), np.float32)
        if rows.shape[0] == 0:
            return out[0]
        view = self.vectors.view()
        ids = np.ascontiguousarray(rows, dtype=np.int64).reshape(1, -1)
        q32 = np.ascontiguousarray(q, dtype=np.float32)
        faiss.fvec_inner_products_by_idx(
            faiss.swig_ptr(out), faiss.swig_ptr(q32), faiss.swig_ptr(view), faiss.swig_ptr(ids),
            view.shape[1], 1, ids.shape[1],
        )  # fmt: skip
        return out[0]

    # -- the cost model -------------------------------------------------------------------
    def calibrate(self, seed: int = 0, repeat: int = 7) -> KnnCost:
        """Measure the cost model on this index and this machine; a writer records it.

        A few stored vectors as queries; random admitted sets of several sizes; gather and
        the in-place scan timed on the same sets, the graph unfiltered at two ef. Built to
        survive a loaded machine (the project's runs at load 6-8 on 2 cores): each call is
        timed in this thread's CPU time, not wall time (at load 7 a wall-clock calibration
        put the compressed scan at 13 ms against its 3-5 ms of CPU, and the planner sent half
        the 1M queries to the exact scan, 1.8x slower: BENCHMARKS.md, issue 16, session 4);
        every round times one query of each (method, set) in a fresh shuffled order, so a
        burst of load from elsewhere falls on all of them alike; each point keeps its minimum
        over the ``repeat`` rounds (load only ever adds time); :func:`fit_cost` fits the lines and
        applies the sanity rule. Well under a second at 1M rows, on the threads set_threads
        chose (one per query in serving). The measured points are recorded beside the model.
        """
        self.wait()
        n = self.published
        if n < CALIBRATE_MIN_ROWS:
            return self.cost
        rng = np.random.default_rng(seed)
        qs = self.vectors.view()[rng.choice(n, repeat, replace=n < repeat)]
        k = 100
        sizes = sorted({min(n, 200), min(n, 2000), n // 50, n // 10, 3 * n // 10})
        sets = {
            m: BitMap(np.sort(rng.choice(n, m, replace=False)).astype(np.uint32)) for m in sizes
        }

        def graph(ef: int) -> Callable[[np.ndarray, int, BitMap | None], KnnResult]:
            return lambda q, kk, allowed: self.search(q, kk, ef, allowed, method="hnsw")

        Method = Callable[[np.ndarray, int, BitMap | None], KnnResult]
        jobs: list[tuple[str, int, Method, BitMap | None]] = []  # (method, x, call, admitted)
        for m, b in sets.items():
            jobs.append(("exact", m, self.exact, b))
            if m <= GATHER_CALIBRATE_MAX:
                jobs.append(("gather", m, self.gather, b))
        pq = self.pq
        if pq is not None and pq.lists:
            # four screens of 3 random labels (a query's default R_T): their rows, timed by
            # the exact scan too, so both lines see the sets queries bring. Its cost is mostly
            # a heap per label and the rescoring, nearly flat in the rows (100K: 2.0-3.2 ms
            # from 5.7K to 20K rows, session 8): screens of one label would tilt the line
            names = np.array(sorted(pq.lists))
            for _ in range(4):
                pick = [int(t) for t in rng.choice(names, min(3, len(names)), replace=False)]
                b = BitMap.union(*(BitMap(pq.lists[t][0].astype(np.uint32)) for t in pick))
                b &= BitMap(range(n))

                def comp(
                    q: np.ndarray, kk: int, a: BitMap | None, pick: list[int] = pick
                ) -> KnnResult:
                    return self.compressed(q, kk, a, None, pick)

                jobs.append(("compressed", len(b), comp, b))
                jobs.append(("exact", len(b), self.exact, b))
        jobs += [("hnsw", 250, graph(250), None), ("hnsw", 1000, graph(1000), None)]
        for _, _, fn, sel in jobs:  # untimed: first touches
            fn(qs[0], k, sel)
        best = np.full(len(jobs), np.inf)
        for q in qs:
            for j in rng.permutation(len(jobs)):
                _, _, fn, sel = jobs[j]
                t0 = time.thread_time()  # CPU time: what a query costs its core
                fn(q, k, sel)
                best[j] = min(best[j], (time.thread_time() - t0) * 1e6)
        points = tuple(
            (method, x, float(t)) for (method, x, _, _), t in zip(jobs, best, strict=True)
        )
        cost = fit_cost(n, points)
        cost = dataclasses.replace(
            cost,
            storage=self.config.fast_storage,
            date=dt.datetime.now().isoformat(timespec="seconds"),
            load_avg=os.getloadavg()[0],
            repeat=repeat,
        )
        self.cost = cost
        if not self.readonly:
            record = {
                **asdict(cost),
                "measured": [{"method": m, "x": x, "us": t} for m, x, t in points],
            }
            atomic_write_bytes(
                self.path / self.COST, (json.dumps(record, indent=2) + "\n").encode()
            )
        return cost

    def vectors_at(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors.view()[rows])  # (C, d_fast)

    def nbytes(self) -> dict[str, int]:
        file = self.path / self.HNSW
        graph = file.stat().st_size if file.exists() else 0
        pq = self.pq
        # the compressed copy lives in memory only (keyword_pq): its bytes there
        return {
            "fast_vectors": self.vectors.nbytes(),
            "hnsw": graph,
            "pq_memory": 0 if pq is None else pq.nbytes(),
        }

    def close(self) -> None:
        self.wait()
        self.vectors.close()
