"""The filtered kNN planner (issue 16): every method against brute force, and the plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyroaring import BitMap

from isr.errors import InvalidInput
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
    assert raw["rows"] == N and raw["storage"] == "sq8"
    for name in ("gather_row_ns", "scan_bit_ns", "scan_row_ns", "graph_ns"):
        assert np.isfinite(raw[name]) and raw[name] >= 0
    assert raw["scan_row_ns"] + raw["scan_bit_ns"] > 0
    fi.close()
    again = FastIndex(tmp_path / "f", fi.config, N, readonly=True)
    assert again.cost == KnnCost(**raw)
    assert again.plan(10, 100, 5) in fast_index.METHODS
    again.close()


def test_knn_method_option_is_validated() -> None:
    assert SearchOptions(knn_method="exact").knn_method == "exact"
    with pytest.raises(InvalidInput, match="knn_method"):
        SearchOptions(knn_method="brute")
    with pytest.raises(InvalidInput, match="exact_threshold"):
        SearchOptions(exact_threshold=-1)
