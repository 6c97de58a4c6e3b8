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
from isr.plugin.pipeline import SearchOptions

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


def test_compressed_against_brute_force_persisted_and_over_a_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # windows of a quarter of the index or more (alpha k / share): part of it, not all
    monkeypatch.setattr(fast_index, "COMPRESSED_MIN_WINDOW", N // 4)
    fi, x = _fast_index(tmp_path / "f", "sq8")
    rng = np.random.default_rng(11)
    q = _unit(rng, 1)[0]
    assert fi.pq is None  # below COMPRESSED_MIN_ROWS: no copy, the exact scan answers
    assert fi.search(q, 10, 64, None, method="compressed").method == "exact"
    assert fi.build_compressed()
    assert (tmp_path / "f" / FastIndex.PQ).exists() and fi.pq.ntotal == N
    recalls = []
    for share in (0.05, 0.3, 1.0):
        for _ in range(8):
            q = _unit(rng, 1)[0]
            rows = np.flatnonzero(rng.random(N) < share) if share < 1 else np.arange(N)
            allowed = None if share == 1.0 else BitMap(rows.astype(np.uint32))
            want = _brute(x, q, 20, rows)
            got = fi.search(q, 20, 64, allowed, method="compressed")
            assert got.method == "compressed"
            assert set(got.rows.tolist()) <= set(rows.tolist())  # admitted rows only
            np.testing.assert_allclose(got.scores, x[got.rows] @ q, rtol=1e-5, atol=1e-6)
            assert np.all(np.diff(got.scores) <= 0)  # best first
            recalls.append(_recall(got.rows, want))
    assert np.mean(recalls) >= 0.95 and min(recalls) >= 0.8, recalls
    fi.close()
    # a reader loads the written copy; rows past it (a copy of 3000 rows) are scored exactly
    reader = FastIndex(tmp_path / "f", fi.config, N, readonly=True)
    assert reader.pq is not None and reader.pq.ntotal == N
    part = fast_index._new_compressed(D)
    part.train(x)
    part.add(x[:3000])
    reader.pq = part
    for _ in range(8):
        q = _unit(rng, 1)[0]
        rows = np.flatnonzero(rng.random(N) < 0.3)
        want = _brute(x, q, 20, rows)
        got = reader.search(q, 20, 64, BitMap(rows.astype(np.uint32)), method="compressed")
        assert set(want[want >= 3000].tolist()) <= set(got.rows.tolist())  # the tail, exact
    reader.close()
    # a damaged copy is not trusted (derived data: the next snapshot rebuilds it)
    file = tmp_path / "f" / FastIndex.PQ
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))
    assert FastIndex(tmp_path / "f", fi.config, N, readonly=True).pq is None


def test_compressed_scans_exactly_when_its_window_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fi, x = _fast_index(tmp_path / "f", "sq8")
    fi.build_compressed()
    monkeypatch.setattr(fast_index, "COMPRESSED_ALPHA", 1e-3)  # a window of 2k + 64 rows
    monkeypatch.setattr(fast_index, "COMPRESSED_MIN_WINDOW", 0)
    rng = np.random.default_rng(12)
    rows = np.flatnonzero(rng.random(N) < 0.01)  # ~40 admitted: ~1 in a 104-row window
    q = _unit(rng, 1)[0]
    got = fi.search(q, 20, 64, BitMap(rows.astype(np.uint32)), method="compressed")
    assert got.method == "compressed+exact"
    assert got.rows.tolist() == _brute(x, q, 20, rows).tolist()
    fi.close()


def test_plan_takes_the_compressed_scan_only_where_its_recall_was_measured(
    tmp_path: Path,
) -> None:
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    cheap = KnnCost(gather_us=10, gather_row_ns=300, scan_us=10, scan_bit_ns=2,
                    scan_row_ns=50, graph_us=10, graph_ns=10_000, compressed_us=5,
                    compressed_bit_ns=1, compressed_row_ns=0)  # fmt: skip
    fi.cost = cheap
    m = int(0.3 * N)
    assert fi.plan(10, 100, m) == "exact"  # no PQ copy yet
    fi.build_compressed()
    assert fi.plan(10, 100, m) == "compressed"  # 9 us against 70 us for the scan
    narrow = int(0.5 * fast_index.COMPRESSED_MIN_SHARE * N)
    assert fi.plan(10, 100, narrow) != "compressed"  # narrower than its recall was measured
    q = _unit(np.random.default_rng(2), 1)[0]
    assert fi.search(q, 10, 100, BitMap(range(0, N, 3))).method == "compressed"
    fi.close()


def test_calibration_times_the_compressed_scan(tmp_path: Path) -> None:
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    fi.build_compressed()
    cost = fi.calibrate(repeat=2)
    record = json.loads((tmp_path / "f" / FastIndex.COST).read_text())
    assert any(p["method"] == "compressed" for p in record["measured"])
    assert cost.compressed_bit_ns > 0 and cost.compressed_us == 0
    fi.close()


def test_every_method_the_options_accept_is_one_the_index_runs(tmp_path: Path) -> None:
    # one list (isr.plugin.backend.KNN_METHODS): a method SearchOptions accepts never reaches
    # FastIndex.search unknown, and the index's own list is that one
    assert fast_index.METHODS == backend.KNN_METHODS
    fi, x = _fast_index(tmp_path / "f", "sq8")
    fi.build_compressed()
    q = x[3]
    allowed = BitMap(range(0, x.shape[0], 2))
    for m in backend.KNN_METHODS:
        assert SearchOptions(knn_method=m).knn_method == m
        got = fi.search(q, 5, 64, allowed, method=m)
        assert got.rows.shape[0] == 5 and set(got.rows.tolist()) <= set(allowed)
    with pytest.raises(InvalidInput):
        SearchOptions(knn_method="nope")


def test_sq8_shortlist_keeps_the_exact_top_and_the_rows_past_the_graph(tmp_path: Path) -> None:
    # the compressed method's window is cut to 2k + 64 rows by the graph's sq8 codes before
    # the float32 rescoring: the exact top-k survives it, and rows the graph lacks (a
    # refreshing reader's tail) are never cut
    fi, x = _fast_index(tmp_path / "f", "sq8")
    rng = np.random.default_rng(21)
    extra = _unit(rng, 10)
    fi.append(extra)  # rows N .. N+9: in the vector file, not in the graph
    fi.vectors.sync()
    allx = np.concatenate([x, extra])
    for _ in range(8):
        q = _unit(rng, 1)[0]
        rows = np.concatenate([np.flatnonzero(rng.random(N) < 0.3), np.arange(N, N + 10)])
        short = fi._shortlist(rows, q, 20)
        assert short.shape[0] == 2 * 20 + 64 + 10
        assert np.all(np.diff(short) > 0) and set(short.tolist()) <= set(rows.tolist())
        assert set(range(N, N + 10)) <= set(short.tolist())
        assert set(_brute(allx, q, 20, rows).tolist()) <= set(short.tolist())
        assert fi._shortlist(rows[:100], q, 20).tolist() == rows[:100].tolist()  # too few to cut
    flat, _ = _fast_index(tmp_path / "g", "flat")  # float32 storage: nothing to shortlist by
    assert flat._shortlist(rows, q, 20).tolist() == rows.tolist()


class _Spy:
    """A PQ copy that records the window each search asks it for."""

    def __init__(self, inner: object) -> None:
        self.inner, self.asked = inner, []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def search(self, q: np.ndarray, w: int) -> object:
        self.asked.append(w)
        return self.inner.search(q, w)


def test_compressed_window_has_a_floor_and_the_copy_four_dims_per_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small k (no rerank after the kNN) keep the window's floor, large k / narrow shares
    # widen it by alpha k / share; the copy is d / 4 sub-quantisers (32 bytes per row at 256-d)
    fi, _ = _fast_index(tmp_path / "f", "sq8")
    fi.build_compressed()
    assert fi.pq.M == D // 4 and fi.pq.code_size == D // 8
    assert fast_index._new_compressed(50).M == 25 and fast_index._new_compressed(51) is None
    monkeypatch.setattr(fast_index, "COMPRESSED_MIN_WINDOW", 1000)
    spy = _Spy(fi.pq)
    fi.pq = spy
    q = _unit(np.random.default_rng(5), 1)[0]
    half = BitMap(range(0, N, 2))
    fi.search(q, 5, 64, half, method="compressed")
    fi.search(q, 100, 64, half, method="compressed")
    fi.search(q, 100, 64, None, method="compressed")
    assert spy.asked == [1000, int(fast_index.COMPRESSED_ALPHA * 100 * 2), 1000]
