"""The filtered kNN planner (issue 16): every method against brute force, and the plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyroaring import BitMap

from isr.errors import InvalidInput
from isr.plugin import backend
from isr.plugin.config import IndexConfig
from isr.plugin.embedded import fast_index
from isr.plugin.embedded.fast_index import FastIndex, KnnCost
from isr.plugin.embedded.keyword_pq import KeywordPQ
from isr.plugin.pipeline import SearchOptions
from isr.plugin.store.rowfile import RowFile

N, D = 4000, 48


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fast_index(path: Path, storage: str) -> tuple[FastIndex, np.ndarray]:
    config = IndexConfig(
        d_fast=D, d_frag=8, max_frags=4, r_i=3, hnsw_m=16, hnsw_ef_construction=64,
        fast_storage=storage,
    )  # fmt: skip
    path.mkdir()
    x = _unit(np.random.default_rng(7), N)
    fi = FastIndex(path, config, 0)
    fi.append(x)
    fi.vectors.sync()
    fi.publish(N)
    return fi, x


@pytest.fixture(params=["flat", "sq8"])
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _brute(x: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray) -> np.ndarray:
    s = x[rows] @ q
    return rows[np.lexsort((rows, -s))[:k]]


def test_every_method_against_brute_force(tmp_path: Path, storage: str) -> None:
    fi, x = _fast_index(tmp_path / "f", storage)
    rng = np.random.default_rng(3)
    for share in (0.005, 0.05, 0.3, 1.0):
        for _ in range(8):
            q = _unit(rng, 1)[0]
            rows = np.flatnonzero(rng.random(N) < share)
            allowed = None if share == 1.0 else BitMap(rows.astype(np.uint32))
            if allowed is None:
                rows = np.arange(N)
            k = min(20, rows.size)
            want = _brute(x, q, k, rows)
            for method in ("gather", "exact"):
                got = fi.search(q, k, 64, allowed, method=method)
                assert got.method == method
                assert got.rows.tolist() == want.tolist(), (storage, share, method)
                # scores are the float32 vectors' (sq8 codes only choose the window)
                np.testing.assert_allclose(got.scores, x[want] @ q, rtol=1e-5, atol=1e-6)
    fi.close()


def test_every_method_over_a_tail_and_an_older_snapshot(tmp_path: Path, storage: str) -> None:
    """A refreshing reader's graph lags its rows (the tail is scored exactly and merged), and a
    search on an older snapshot never returns rows published after it."""
    fi, x = _fast_index(tmp_path / "f", storage)
    fi.close()
    g, n = 3000, N  # the graph holds rows < g; the reader takes the rest as a tail
    reader = FastIndex(tmp_path / "f", fi.config, 0, readonly=True)
    reader.hnsw = _graph_of(fi.config, x[:g])
    reader.published = 0
    reader.take(n)
    assert reader.hnsw.ntotal == g and reader.published == n
    rng = np.random.default_rng(5)
    for share in (0.01, 0.3, 1.0):
        for snap in (n, 3500, 2500):  # past the graph, inside the tail, inside the graph
            q = _unit(rng, 1)[0]
            rows = np.flatnonzero(rng.random(N) < share)
            allowed = None if share == 1.0 else BitMap(rows.astype(np.uint32))
            if allowed is None:
                rows = np.arange(N)
            rows = rows[rows < snap]
            k = min(20, rows.size)
            want = _brute(x, q, k, rows)
            for method in ("gather", "exact"):
                got = reader.search(q, k, 64, allowed, method=method, n_rows=snap)
                assert got.rows.tolist() == want.tolist(), (storage, share, snap, method)
            got = reader.search(q, k, 400, allowed, method="hnsw", n_rows=snap)
            assert got.rows.size == k and int(got.rows.max()) < snap, (storage, share, snap)
            if snap > g:
                assert got.method in ("hnsw+tail", "hnsw+exact")
    reader.close()


def _graph_of(config: IndexConfig, x: np.ndarray) -> object:
    graph = fast_index._new_hnsw(config)
    graph.add(x)
    return graph


def test_plan_follows_the_cost_model(tmp_path: Path) -> None:
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    fi.cost = KnnCost(gather_us=10, gather_row_ns=300, scan_us=10, scan_bit_ns=2,
                      scan_row_ns=50, graph_us=10, graph_ns=1)  # fmt: skip
    assert fi.plan(10, 100, 20) == "gather"  # 16 us against 19 us for the scan
    assert fi.plan(10, 100, 1500) == "exact"  # 93 us against 460 us
    # the graph is the cheapest here, but a filter this narrow costs it recall
    assert fi.plan(10, 100, int(0.4 * N)) == "exact"
    assert fi.plan(10, 100, None) == "hnsw"
    assert fi.search(_unit(np.random.default_rng(0), 1)[0], 10, 100, None).method == "hnsw"
    # the older fixed rule, when asked for
    q = _unit(np.random.default_rng(1), 1)[0]
    few = BitMap(range(0, N, 50))
    assert fi.search(q, 10, 100, few, exact_threshold=100).method == "exact"
    assert fi.search(q, 10, 100, few, exact_threshold=0).method == "hnsw"
    with pytest.raises(InvalidInput, match="method"):
        fi.search(q, 10, 100, few, method="magic")
    fi.close()


def test_calibration_is_measured_recorded_and_reloaded(tmp_path: Path) -> None:
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    assert not (tmp_path / "f" / FastIndex.COST).exists()
    fi.snapshot()  # a writer's snapshot calibrates an index that doubled since the last one
    raw = json.loads((tmp_path / "f" / FastIndex.COST).read_text())
    assert raw["rows"] == N and raw["storage"] == "sq8" and raw["repeat"] == 7
    for name in ("gather_row_ns", "scan_bit_ns", "scan_row_ns", "graph_ns"):
        assert np.isfinite(raw[name]) and raw[name] >= 0
    assert raw["scan_row_ns"] + raw["scan_bit_ns"] > 0
    assert raw["scan_row_ns"] <= raw["gather_row_ns"]  # the sanity rule
    # the measured minima are recorded beside the model: every method, several sizes
    measured = raw.pop("measured")
    # (every method the index has: a PQ copy only exists from COMPRESSED_MIN_ROWS)
    assert {m["method"] for m in measured} == set(fast_index.METHODS) - {"compressed"}
    assert len({m["x"] for m in measured if m["method"] == "exact"}) >= 4
    assert all(np.isfinite(m["us"]) and m["us"] > 0 for m in measured)
    fi.close()
    again = FastIndex(tmp_path / "f", fi.config, N, readonly=True)
    assert again.cost == KnnCost(**raw)
    # a refreshing reader takes in the writer's next calibration
    newer = dict(raw, scan_row_ns=raw["scan_row_ns"] + 1.0, rows=2 * N)
    (tmp_path / "f" / FastIndex.COST).write_text(json.dumps(newer))
    again.take(N)
    assert again.cost == KnnCost(**newer)
    assert again.plan(10, 100, 5) in fast_index.METHODS
    again.close()


def test_knn_method_option_is_validated() -> None:
    assert SearchOptions(knn_method="exact").knn_method == "exact"
    with pytest.raises(InvalidInput, match="knn_method"):
        SearchOptions(knn_method="brute")
    with pytest.raises(InvalidInput, match="exact_threshold"):
        SearchOptions(exact_threshold=-1)


def test_fit_recovers_lines_and_applies_the_sanity_rule() -> None:
    n = 100_000
    sizes = (200, 2000, 10_000, 30_000)
    clean = [("gather", m, 5 + 0.2 * m) for m in sizes]  # 200 ns a row
    clean += [("exact", m, 100 + 0.05 * m) for m in sizes]  # 1 ns a bit, 50 ns a row
    clean += [("hnsw", 250, 300.0), ("hnsw", 1000, 1050.0)]
    c = fast_index.fit_cost(n, clean)
    np.testing.assert_allclose(
        [c.gather_us, c.gather_row_ns, c.scan_bit_ns, c.scan_row_ns, c.graph_us, c.graph_ns],
        [5, 200, 1, 50, 50, 1000], rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    assert c.rows == n
    # last session's calibration at load 6.8 (100K, sq8): a burst on the wide scan read 379
    # ns a row against gather's 191, and the planner gathered every ~18% filter (1.27x slower)
    noisy = [("gather", m, 6.1 + 0.191 * m) for m in sizes]
    noisy += [("exact", m, 166 + 0.379 * m) for m in sizes]
    c = fast_index.fit_cost(n, noisy)
    assert c.scan_row_ns == pytest.approx(fast_index.SCAN_PER_GATHER * 191)  # capped
    # ... but kept as measured for the comparison with the compressed scan (plan())
    assert c.scan_measured_row_ns == pytest.approx(379)
    assert c.predict("exact", n, 18_000, 1000, measured=True) == pytest.approx(166 + 0.379 * 18_000)
    # the intercept: the lowest line of that slope under the points (here through the first)
    assert c.scan_bit_ns * n / 1e3 == pytest.approx(166 + (0.379 - c.scan_row_ns / 1e3) * 200)
    plan = min(("gather", "exact"), key=lambda m: c.predict(m, n, 18_000, 1000))
    assert plan == "exact"
    assert min(("gather", "exact"), key=lambda m: c.predict(m, n, 200, 1000)) == "gather"


def test_search_plans_by_the_model_recorded_in_the_index(tmp_path: Path) -> None:
    """A reader plans every query by the knn_cost.json of its index, not by defaults."""
    from isr.ingest.encoded_source import fill_index
    from isr.ingest.encoded_world import EncodedWorld, encoded_queries, world_source
    from isr.plugin.embedded.index import EmbeddedIndex
    from isr.plugin.pipeline import search

    world = EncodedWorld(n_docs=2500, d_fast=32, d_frag=16, n_frags=8, n_labels=40, r_i=4)
    config = IndexConfig(d_fast=32, d_frag=16, max_frags=8, r_i=4, hnsw_m=16,
                         hnsw_ef_construction=64)  # fmt: skip
    path = tmp_path / "idx"
    index = EmbeddedIndex.create(path, config)
    fill_index(index, world_source(world, None), 1000)
    index.close()  # the snapshot calibrates (2,500 rows >= CALIBRATE_MIN_ROWS)
    assert (path / FastIndex.COST).exists()
    queries, _ = encoded_queries(world, 6)
    cheap = dict(gather_us=1e6, gather_row_ns=1e6, scan_us=1e6, scan_bit_ns=1e6,
                 scan_row_ns=1e6, graph_us=1e6, graph_ns=1e6, rows=2500)  # fmt: skip
    models = {
        "gather": {**cheap, "gather_us": 1.0, "gather_row_ns": 0.0},
        "exact": {**cheap, "scan_us": 1.0, "scan_bit_ns": 0.0, "scan_row_ns": 0.0},
        "hnsw": {**cheap, "graph_us": 1.0, "graph_ns": 0.0},
    }
    seen = set()
    for want, model in models.items():
        (path / FastIndex.COST).write_text(json.dumps(model))
        with EmbeddedIndex.open(path, readonly=True) as reader:
            assert reader.fast.cost == KnnCost(**model)
            for ablation in ("full", "fast+rerank"):
                opt = SearchOptions.for_ablation(ablation, size=5, rerank_window=20)
                for i in range(len(queries)):
                    res = search(reader, queries[i], opt)
                    stages = {s.name: s for s in res.profile.stages}
                    admitted = 2500
                    if "keywords" in stages and not res.profile.relaxed:
                        admitted = stages["keywords"].count
                    # the graph only where the filter admits >= GRAPH_MIN_SHARE (module doc);
                    # else gather, the cheaper of the two left under this model
                    wide = admitted >= fast_index.GRAPH_MIN_SHARE * 2500
                    expect = want if want != "hnsw" or wide else "gather"
                    assert stages["knn"].detail == expect, (want, ablation, admitted)
                    seen.add((want, ablation, wide))
    # both kinds of query were seen: filtered narrow by the screen, and unfiltered
    assert ("hnsw", "fast+rerank", True) in seen


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return len(set(got.tolist()) & set(want.tolist())) / max(len(want), 1)


V = 12  # labels in the compressed tests' vocabulary


def _labels(fi: FastIndex, path: Path, n: int, seed: int = 3) -> np.ndarray:
    """Attach a label file of n rows (3 distinct labels of V per row) to fi, as an index does."""
    rng = np.random.default_rng(seed)
    lab = np.argsort(rng.random((n, V)), axis=1)[:, :3].astype(np.int32)
    rf = RowFile(path / "labels.i32", np.int32, (3,), 0)
    rf.append(lab)
    rf.sync()
    rf.committed()
    fi.labels = rf
    return lab


def _screen(lab: np.ndarray, labels: list[int]) -> np.ndarray:
    return np.flatnonzero(np.isin(lab, labels).any(axis=1))


def test_compressed_against_brute_force_and_over_a_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the lists' PQ estimates keep 5k rows (the default factor) without the floor of 1,000
    # (most of a label's ~1,000 rows here), so the quantiser's ranking is what is tested
    monkeypatch.setattr(fast_index, "COMPRESSED_MIN_KEEP", 0)
    fi, x = _fast_index(tmp_path / "f", "sq8")
    rng = np.random.default_rng(11)
    q = _unit(rng, 1)[0]
    assert fi.pq is None and not fi.build_compressed()  # no labels attached: no copy
    lab = _labels(fi, tmp_path / "f", N)
    assert fi.search(q, 10, 64, BitMap([1, 2]), method="compressed", labels=[0]).method == "exact"
    assert fi.build_compressed()
    assert fi.pq.rows == N and fi.pq.entries == 3 * N and fi.pq.base.pq.M == D // 2
    assert fi.pq.list_rows([0, 1]) == len(_screen(lab, [0])) + len(_screen(lab, [1]))
    recalls = []
    for labels in ([0], [1, 5], [2, 3, 7, 9]):
        for narrower in (False, True):
            for _ in range(4):
                q = _unit(rng, 1)[0]
                rows = _screen(lab, labels)
                if narrower:  # another filter on top: 70% of the screen's rows
                    rows = rows[rng.random(rows.shape[0]) < 0.7]
                allowed = BitMap(rows.astype(np.uint32))
                want = _brute(x, q, 20, rows)
                got = fi.search(q, 20, 64, allowed, method="compressed", labels=labels)
                assert got.method == "compressed"
                assert set(got.rows.tolist()) <= set(rows.tolist())  # admitted rows only
                np.testing.assert_allclose(got.scores, x[got.rows] @ q, rtol=1e-5, atol=1e-6)
                assert np.all(np.diff(got.scores) <= 0)  # best first
                recalls.append(_recall(got.rows, want))
    assert np.mean(recalls) >= 0.95 and min(recalls) >= 0.8, recalls
    # a copy of the first 3000 rows: the admitted rows past it are scored exactly
    fi.pq = KeywordPQ.build(x, lab, 3000)
    for _ in range(8):
        q = _unit(rng, 1)[0]
        rows = _screen(lab, [4, 6])
        want = _brute(x, q, 20, rows)
        got = fi.search(
            q, 20, 64, BitMap(rows.astype(np.uint32)), method="compressed", labels=[4, 6]
        )
        assert got.method == "compressed"
        assert set(want[want >= 3000].tolist()) <= set(got.rows.tolist())  # the tail, exact
    # a caller's older snapshot (n_rows 2000): no row past it, from the copy or the tail
    rows = _screen(lab, [4, 6])
    got = fi.search(
        q, 20, 64, BitMap(rows.astype(np.uint32)), method="compressed", n_rows=2000, labels=[4, 6]
    )
    assert (
        got.rows.max() < 2000 and got.rows.tolist() == _brute(x, q, 20, rows[rows < 2000]).tolist()
    )
    fi.close()


def test_compressed_copy_is_rebuilt_once_the_tail_passes_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_index, "COMPRESSED_MIN_ROWS", 1000)
    monkeypatch.setattr(fast_index, "TAIL_MAX", 500)
    fi, x = _fast_index(tmp_path / "f", "sq8")
    lab = _labels(fi, tmp_path / "f", N + 800)
    fi.refresh_compressed()
    first = fi.pq
    assert first is not None and first.rows == N
    rng = np.random.default_rng(4)
    more = _unit(rng, 800)
    fi.append(more[:400])
    fi.vectors.sync()
    fi.publish(N + 400)
    fi.refresh_compressed()
    assert fi.pq is first  # 400 rows past it: scored exactly
    assert fi._compressed_fits(N, N + 400, [0])
    fi.append(more[400:])
    fi.vectors.sync()
    fi.publish(N + 800)
    assert not fi._compressed_fits(N, N + 800, [0])  # 800 > TAIL_MAX: not planned ...
    fi.refresh_compressed()
    assert fi.pq is not first and fi.pq.rows == N + 800  # ... until rebuilt, aside
    assert first.rows == N and fi.pq.base is first.base  # same quantiser; the old copy intact
    allx = np.concatenate([x, more])
    q = _unit(rng, 1)[0]
    rows = _screen(lab, [1])
    got = fi.search(q, 10, 64, BitMap(rows.astype(np.uint32)), method="compressed", labels=[1])
    assert got.method == "compressed"
    assert _recall(got.rows, _brute(allx, q, 10, rows)) >= 0.9
    fi.close()


def test_compressed_scans_exactly_when_too_few_admitted_rows_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fast_index, "COMPRESSED_KEEP_FACTOR", 1)
    monkeypatch.setattr(fast_index, "COMPRESSED_MIN_KEEP", 0)
    fi, x = _fast_index(tmp_path / "f", "sq8")
    lab = _labels(fi, tmp_path / "f", N)
    fi.build_compressed()
    rng = np.random.default_rng(12)
    rows = _screen(lab, [2])
    rows = rows[rng.random(rows.shape[0]) < 0.05]  # ~50 admitted: ~1 in the 20 kept
    q = _unit(rng, 1)[0]
    got = fi.search(q, 20, 64, BitMap(rows.astype(np.uint32)), method="compressed", labels=[2])
    assert got.method == "compressed+exact"
    assert got.rows.tolist() == _brute(x, q, 20, rows).tolist()
    fi.close()


def test_plan_takes_the_compressed_scan_only_for_a_screen_its_lists_hold(
    tmp_path: Path,
) -> None:
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    lab = _labels(fi, tmp_path / "f", N)
    cheap = KnnCost(gather_us=10, gather_row_ns=300, scan_us=10, scan_bit_ns=2,
                    scan_row_ns=50, graph_us=10, graph_ns=10_000, compressed_us=5,
                    compressed_bit_ns=0, compressed_row_ns=1)  # fmt: skip
    fi.cost = cheap
    m = len(_screen(lab, [0, 1]))
    assert fi.plan(10, 100, m, labels=[0, 1]) == "exact"  # no copy yet
    fi.build_compressed()
    assert fi.plan(10, 100, m, labels=[0, 1]) == "compressed"  # 5 us + m ns against the scan
    assert fi.plan(10, 100, m) != "compressed"  # no screen: nothing to scan the lists of
    narrow = int(0.4 * fi.pq.list_rows([0, 1]))
    assert fi.plan(10, 100, narrow, labels=[0, 1]) != "compressed"  # most of its rows rejected
    q = _unit(np.random.default_rng(2), 1)[0]
    allowed = BitMap(_screen(lab, [0, 1]).astype(np.uint32))
    assert fi.search(q, 10, 100, allowed, labels=[0, 1]).method == "compressed"
    fi.close()


def test_calibration_times_the_compressed_scan(tmp_path: Path) -> None:
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    _labels(fi, tmp_path / "f", N)
    fi.build_compressed()
    cost = fi.calibrate(repeat=2)
    record = json.loads((tmp_path / "f" / FastIndex.COST).read_text())
    assert sum(p["method"] == "compressed" for p in record["measured"]) >= 2
    assert cost.compressed_bit_ns == 0 and cost.compressed_us + cost.compressed_row_ns > 0
    fi.close()


def test_every_method_the_options_accept_is_one_the_index_runs(tmp_path: Path) -> None:
    # one list (isr.plugin.backend.KNN_METHODS): a method SearchOptions accepts never reaches
    # FastIndex.search unknown, and the index's own list is that one
    assert fast_index.METHODS == backend.KNN_METHODS
    fi, x = _fast_index(tmp_path / "f", "sq8")
    _labels(fi, tmp_path / "f", N)
    fi.build_compressed()
    q = x[3]
    allowed = BitMap(range(0, x.shape[0], 2))
    for m in backend.KNN_METHODS:
        assert SearchOptions(knn_method=m).knn_method == m
        got = fi.search(q, 5, 64, allowed, method=m)
        assert got.rows.shape[0] == 5 and set(got.rows.tolist()) <= set(allowed)
    with pytest.raises(InvalidInput):
        SearchOptions(knn_method="nope")


class _Spy:
    """A compressed copy that records how many rows each search asks its lists for."""

    def __init__(self, inner: object) -> None:
        self.inner, self.asked = inner, []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def search(self, q: np.ndarray, labels: list[int], want: int) -> object:
        self.asked.append(want)
        return self.inner.search(q, labels, want)


def test_compressed_keeps_a_floor_of_rows_and_two_dims_per_code(tmp_path: Path) -> None:
    # small k (no rerank after the kNN) keep the floor of rows, large k five per result; the
    # copy's codes are d / 2 sub-quantisers of 4 bits (64 bytes a list entry at 256-d)
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    lab = _labels(fi, tmp_path / "f", N)
    fi.build_compressed()
    assert fi.pq.base.pq.M == D // 2 and fi.pq.codes.shape == (N, D // 4)
    assert KeywordPQ.build(np.zeros((10, 51), np.float32), lab[:10], 10) is None  # odd d
    spy = _Spy(fi.pq)
    fi.pq = spy
    q = _unit(np.random.default_rng(5), 1)[0]
    allowed = BitMap(_screen(lab, [3]).astype(np.uint32))
    fi.search(q, 5, 64, allowed, method="compressed", labels=[3])
    fi.search(q, 300, 64, allowed, method="compressed", labels=[3])
    assert spy.asked == [fast_index.COMPRESSED_MIN_KEEP, 5 * 300]


def test_a_writer_snapshot_removes_an_older_versions_pq_copy(tmp_path: Path) -> None:
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    for name in FastIndex.STALE:
        (tmp_path / "f" / name).write_bytes(b"old")
    fi.snapshot()
    assert not any((tmp_path / "f" / name).exists() for name in FastIndex.STALE)
    assert (tmp_path / "f" / FastIndex.HNSW).exists()
    fi.close()
