"""The scale benchmark (`eval/bench.py`): it builds, reuses, measures and reports on tiny
galleries; its figures are checked for consistency, not for speed (speed lives in BENCHMARKS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from isr.app.cli import main
from isr.errors import InvalidInput
from isr.eval import bench_report
from isr.eval.ablations import AblationRow
from isr.eval.bench import ScaleConfig, build_gallery, run
from isr.eval.bench_gpu import gpu_bench
from isr.ingest.encoded_world import EncodedWorld
from isr.plugin.embedded.index import EmbeddedIndex

TINY = ScaleConfig(
    sizes=(400, 900),
    queries=12,
    exhaustive_queries=4,
    batch=300,
    codec_docs=300,
    threads=1,
    exhaustive_workers=2,
    build_threads=1,
    sweep=((100, 50, False), (100, 50, True)),
)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("bench")
    return run(TINY, root / "work", root / "out"), root


def test_run_measures_every_size_and_configuration(result: tuple[dict, Path]) -> None:
    res, root = result
    assert [s["docs"] for s in res["sizes"]] == [400, 900]
    for s in res["sizes"]:
        names = [a["name"] for a in s["ablations"]]
        assert names == ["fast", "keywords+fast", "full", "fast+rerank", "exhaustive",
                         "keywords+exhaustive"]  # fmt: skip
        by = {a["name"]: a for a in s["ablations"]}
        assert by["exhaustive"]["queries"] == 4 and by["full"]["queries"] == 12
        assert set(by["full"]["stages"]) >= {"keywords", "knn", "rerank", "fetch"}
        assert "knn" not in by["exhaustive"]["stages"]
        # the stored sizes are the files' sizes, and they add up
        assert s["bytes_total"] == sum(s["bytes"].values())
        assert s["bytes"]["fragments"] == s["docs"] * (32 * 128 + 1)  # sq8: a byte per dim
        assert s["build"]["docs"] == s["docs"] and s["build"]["docs_per_s"] > 0
        assert 0 <= s["recall_kept"] <= 10 and 0 <= s["overlap_full_exhaustive"] <= 1
        # exhaustive max-sim finds the target in these easy tiny galleries
        assert by["exhaustive"]["recall_10"] >= 0.75
        assert s["speedup_full"] == pytest.approx(by["exhaustive"]["p50_ms"] / by["full"]["p50_ms"])
    w, x = res["sizes"][1]["sweep"]
    assert (w["num_candidates"], w["rerank_window"], w["queries"]) == (100, 50, 12)
    assert not w["exact_knn"] and x["exact_knn"]
    assert res["sizes"][0]["sweep"] == []  # only at the largest size
    cb = res["codec_bytes"]
    assert cb["fp32"] == 32 * 128 * 4 + 1 and cb["fp16"] == 32 * 128 * 2 + 1
    assert cb["sq8"] == 32 * 128 + 1
    assert res["kernel"] and all(r["kernel_gflops"] > 0 for r in res["kernel"])
    out = root / "out"
    md = (out / "bench.md").read_text()
    for heading in ("Build and size", "Latency and recall", "Max-sim kernel", "Targets at 900"):
        assert heading in md
    assert json.loads((out / "bench.json").read_text())["sizes"][1]["docs"] == 900
    assert (out / "latency_vs_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "recall_vs_speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_built_gallery_is_reused_and_a_different_one_rebuilt(
    result: tuple[dict, Path],
) -> None:
    res, root = result
    world = EncodedWorld(n_docs=400)
    path, build = build_gallery(root / "work", world, TINY.index_config(world), 300, 1)
    assert build == res["sizes"][0]["build"]  # the recorded figures, not a rebuild
    # a partial index at that place (a killed build) is rebuilt, not reported
    with EmbeddedIndex.open(path) as index:
        index.delete(["doc-0000000"])
        index.commit()
    build_gallery(root / "work", world, TINY.index_config(world), 300, 1)
    with EmbeddedIndex.open(path, readonly=True) as index:
        assert len(index) == 400


def test_targets_say_met_or_not() -> None:
    def size(p50: float, speedup: float, kept: float, total: int) -> dict:
        full = {"name": "full", "p50_ms": p50}
        return {"docs": 1000, "ablations": [full], "speedup_full": speedup,
                "recall_kept": kept, "bytes_total": total, "build": {}}  # fmt: skip

    res = {"config": {"codec": "sq8"}, "kernel": [{"pct_peak": 65.0}],
           "sizes": [size(12.0, 400.0, 1.01, 5_000_000)]}  # fmt: skip
    assert [r[2] for r in bench_report.targets(res)] == ["yes"] * 5
    res["sizes"] = [size(25.0, 100.0, 0.95, 7_000_000)]
    res["kernel"] = [{"pct_peak": 40.0}]
    assert [r[2] for r in bench_report.targets(res)] == ["**NO**"] * 5


def test_recall_at_counts_the_first_queries() -> None:
    row = AblationRow("x", 0, 0, 1, 1, 1, 0, (("a", "b"), ("c",), ("z",)))
    assert row.recall_at(["b", "c", "q"], 10) == pytest.approx(2 / 3)
    assert row.recall_at(["b", "c", "q"], 1) == pytest.approx(1 / 3)
    assert row.recall_at(["b", "c", "q"], 10, n=2) == 1.0


def test_bad_configs_are_named() -> None:
    with pytest.raises(InvalidInput, match="exhaustive_queries"):
        ScaleConfig(queries=5, exhaustive_queries=6)
    with pytest.raises(InvalidInput, match="sizes"):
        ScaleConfig(sizes=(10,))


def test_device_figures_run_on_cpu(result: tuple[dict, Path]) -> None:
    """The CUDA section's code, run on the CPU device on the tiny gallery."""
    res, _ = result
    g = gpu_bench(Path(res["sizes"][0]["path"]), device="cpu", bw_bytes=2**22, chunk_rows=128)
    assert g["bandwidth_GBps"] > 0 and g["kernel_gflops"] > 0
    assert g["exhaustive_docs"] == 400
    assert g["fragment_bytes_resident"] == 400 * 32 * 128  # sq8 codes, counts kept apart
    assert g["rerank_400_engine_ms"] > 0 and g["exhaustive_over_read_once"] > 0
    assert np.isfinite(g["read_once_ms"])


def test_cli_help_lists_the_options() -> None:
    out = CliRunner().invoke(main, ["bench", "--help"])
    assert out.exit_code == 0, out.output
    assert "--sizes" in out.output and "--exhaustive-queries" in out.output


def test_batched_exhaustive_truth_equals_the_pipeline(result: tuple[dict, Path]) -> None:
    from isr.eval.ablations import run_ablations
    from isr.eval.bench import exhaustive_truth
    from isr.ingest.encoded_world import encoded_queries

    res, _ = result
    queries, truth = encoded_queries(EncodedWorld(n_docs=900), 6, seed=11)
    with EmbeddedIndex.open(res["sizes"][1]["path"], readonly=True) as index:
        (row,) = run_ablations(index, queries, truth, names=["exhaustive"], progress=False)
        assert exhaustive_truth(index, queries) == list(row.hits)


def test_peers_run_every_system_on_the_same_queries(tmp_path: Path) -> None:
    """`isr bench --peers`: every system answers every query; the figures are consistent."""
    from isr.eval.bench import run_peer_sizes

    cfg = ScaleConfig(sizes=(2500,), queries=8, exhaustive_queries=1, batch=1000,
                      threads=1, exhaustive_workers=1, build_threads=1,
                      num_candidates=100, rerank_window=50)  # fmt: skip
    text = run_peer_sizes(cfg, tmp_path / "work", tmp_path / "out")
    (res,) = json.loads((tmp_path / "out" / "bench_peers.json").read_text())
    names = [r["name"] for r in res["rows"]]
    assert "isr full (planned kNN)" in names and "FAISS flat IP + rerank" in names
    assert "keywords + exact + rerank" in names and res["queries"] == 8
    for r in res["rows"]:
        assert 0.0 <= r["recall_10"] <= 1.0 and r["cpu_p50_ms"] > 0 and r["bytes_per_item"] > 0
        assert r["cpu_p95_ms"] >= r["cpu_p50_ms"]
    # the planned full pipeline chose a method for every query (warm-up included)
    assert sum(res["plans"].values()) == 9
    assert res["knn_cost"]["rows"] == 2500 and res["rerank_pct_of_matmul"] > 0
    assert "| isr full (planned kNN) |" in text and "PLAID: not run (no --plaid-python)" in text


def test_peers_time_the_compressed_knn_where_the_gallery_has_a_pq_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gallery past COMPRESSED_MIN_ROWS (lowered here) has a compressed copy (the bench's
    reader builds it in memory on open), and --peers times the compressed method beside the
    rest: the keyword-screened queries of the forced row took it."""
    from isr.eval.bench import run_peer_sizes
    from isr.plugin.embedded import fast_index

    monkeypatch.setattr(fast_index, "COMPRESSED_MIN_ROWS", 1000)
    cfg = ScaleConfig(sizes=(2500,), queries=8, exhaustive_queries=1, batch=1000,
                      threads=1, exhaustive_workers=1, build_threads=1,
                      num_candidates=100, rerank_window=50)  # fmt: skip
    run_peer_sizes(cfg, tmp_path / "work", tmp_path / "out")
    (res,) = json.loads((tmp_path / "out" / "bench_peers.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    got, exact = rows["isr full (compressed kNN)"], rows["isr full (exact kNN)"]
    assert got["recall_10"] >= exact["recall_10"] - 0.25 and got["cpu_p50_ms"] > 0
    assert res["compressed_methods"].get("compressed", 0) > 0, res["compressed_methods"]


# fast_plaid's API as the worker calls it, scoring exactly (max-sim over every document): what
# PLAID approximates. It lets CI check the worker protocol, the row -> id mapping and the
# keyword subset without fast_plaid's own environment (the real one: docs/results/bench_peers.md)
FAKE_FAST_PLAID = """
import json, os
import numpy as np

class FastPlaid:
    def __init__(self, index, device=None):
        self.index = index

    def create(self, documents_embeddings, nbits=4):
        os.makedirs(self.index, exist_ok=True)
        n = max(len(d) for d in documents_embeddings)
        d = documents_embeddings[0].shape[1]
        out = np.zeros((len(documents_embeddings), n, d), np.float32)
        lens = np.zeros(len(documents_embeddings), np.int64)
        for i, e in enumerate(documents_embeddings):
            out[i, : len(e)] = e.numpy()
            lens[i] = len(e)
        np.save(os.path.join(self.index, "docs.npy"), out)
        np.save(os.path.join(self.index, "lens.npy"), lens)
        with open(os.path.join(self.index, "created"), "a") as f:
            f.write("x")
        return self

    def search(self, queries_embeddings, top_k=10, n_ivf_probe=8, n_full_scores=4096,
               show_progress=True, batch_size=1, subset=None):
        docs = np.load(os.path.join(self.index, "docs.npy"))
        lens = np.load(os.path.join(self.index, "lens.npy"))
        q = queries_embeddings[0].numpy()
        sim = np.einsum("qd,cnd->cqn", q, docs)
        pad = np.arange(docs.shape[1])[None, None, :] >= lens[:, None, None]
        sim = np.where(pad, -np.inf, sim)
        s = sim.max(2).sum(1)
        rows = np.arange(len(docs)) if subset is None else np.asarray(subset[0])
        best = rows[np.argsort(-s[rows], kind="stable")[:top_k]]
        return [[(int(r), float(s[r])) for r in best]]
"""


def test_peers_run_plaid_in_its_own_process(tmp_path: Path) -> None:
    """`--plaid-python`: PLAID answers in the round-robin from a worker process under another
    interpreter; with an exact stand-in for fast_plaid, its R@10 is exhaustive max-sim's, its
    keyword-subset row only returns keyword rows, and the index is built once per gallery."""
    import os
    import sys

    from isr.eval.bench import run_peer_sizes

    pkg = tmp_path / "site" / "fast_plaid"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "search.py").write_text(FAKE_FAST_PLAID)
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"} exec {sys.executable} "$@"\n')
    os.chmod(python, 0o755)
    cfg = ScaleConfig(sizes=(600,), queries=6, exhaustive_queries=1, batch=300, threads=1,
                      exhaustive_workers=1, build_threads=1, num_candidates=100,
                      rerank_window=50, plaid_python=str(python))  # fmt: skip
    for _ in range(2):  # the second run reuses the gallery and PLAID's index
        text = run_peer_sizes(cfg, tmp_path / "work", tmp_path / "out")
    (res,) = json.loads((tmp_path / "out" / "bench_peers.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    plaid, screened = rows["PLAID (fast-plaid)"], rows["PLAID + keyword subset"]
    assert plaid["recall_10"] == pytest.approx(res["exhaustive_r10"])
    assert plaid["recall_kept"] == pytest.approx(1.0) and plaid["cpu_p50_ms"] > 0
    assert screened["recall_10"] <= plaid["recall_10"] + 1e-9 and plaid["bytes_per_item"] > 0
    (created,) = (tmp_path / "work").glob("plaid-*/index/created")
    assert created.read_text() == "x"  # built once, reused by the second run
    assert "(reused)" in text and "| PLAID + keyword subset |" in text
