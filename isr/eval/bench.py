"""Scale benchmark (issue 7): how the engine's cost grows with the gallery, side by side.

Entry points: ``python eval/bench.py`` and ``isr bench`` (the same options). For each gallery
size (default 10K, 100K, 1M synthetic documents with the bundle's output shapes, from
:mod:`isr.ingest.encoded_world`) it builds an index once under ``--workdir`` (reused on later
runs: the build figures are kept in ``build.json`` beside it) and measures in one run:

- build rate (docs/s, add + commit, generation excluded) and bytes per item per structure;
  fragments bytes per codec (fp32, fp16, sq8) from a 10K index built with each;
- per query, p50/p95 of every pipeline stage and of the total, for each ablation; exhaustive
  max-sim over the whole gallery (the base model's cost) on the first ``--exhaustive-queries``
  queries; a FAISS flat inner-product scan of the fast vectors (the plain one-vector baseline);
- the full pipeline's speed-up over exhaustive max-sim and the recall@10 it keeps against it
  (the ratio of their recall@10 on the same queries, and the overlap of their top 10);
- the max-sim kernel's GFLOP/s against a square matmul measured in the same run;
- on CUDA, when present: memory bandwidth, the kernel, the rerank of 1,000 candidates and an
  exhaustive scan of the largest gallery's fragments held in device memory.

Writes ``bench.md`` (the tables), ``bench.json`` and ``latency_vs_size.png`` to ``--out``.
Query encoding is excluded throughout; the index files are read once and an untimed pass of
other queries runs before timing (a warm server; the first queries of a cold process pay
page-table faults on the fragment store, ~3 ms each at 1M). Latencies are single queries on ``--threads`` threads; an exhaustive scan splits the
store across ``--exhaustive-workers`` threads (all cores by default: its best case). Recall of
exhaustive max-sim is taken over every query in one batched pass
(:meth:`~isr.plugin.store.maxsim.MaxSimScorer.exhaustive_many`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from isr.encoders.record import Encoded
from isr.errors import Conflict, CorruptIndex, InvalidInput, NotFound
from isr.eval.ablations import AblationRow, recall_at, run_ablations
from isr.eval.bench_gpu import gpu_bench
from isr.eval.bench_maxsim import BenchConfig, bench_kernel
from isr.eval.bench_peers import render as render_peers
from isr.eval.bench_peers import run_peers
from isr.eval.bench_report import plot_latency, plot_recall_speedup, render
from isr.eval.plaid_peer import PlaidPeer
from isr.ingest.encoded_source import fill_index
from isr.ingest.encoded_world import EncodedWorld, encoded_queries, world_source
from isr.plugin import EmbeddedIndex, IndexConfig, SearchOptions

__all__ = [
    "ScaleConfig",
    "SetThreads",
    "build_gallery",
    "run",
    "run_peer_sizes",
    "sweep_point",
]

# How the benchmark sets the process's torch/FAISS threads between phases (builds on every
# core, single queries on --threads): the app hands in isr.app.runtime.set_threads; a library
# caller that leaves the pools alone passes nothing.
SetThreads = Callable[[int], None]


def _keep_threads(n: int) -> None:
    pass


FAST_ABLATIONS = ("fast", "keywords+fast", "full", "fast+rerank")
SLOW_ABLATIONS = ("exhaustive", "keywords+exhaustive")
CODECS = ("fp32", "fp16", "sq8")


@dataclass(frozen=True)
class ScaleConfig:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    codec: str = "sq8"
    fast_storage: str = "sq8"
    hnsw_m: int = 16
    ef_construction: int = 100
    queries: int = 200
    exhaustive_queries: int = 10
    num_candidates: int = 1000
    rerank_window: int = 200
    threads: int = 1
    exhaustive_workers: int = 0  # 0: all cores
    build_threads: int = 0  # 0: all cores
    batch: int = 5000
    codec_docs: int = 10_000  # gallery size of the per-codec bytes comparison
    # (num_candidates, rerank_window, exact kNN) at the largest size; exact: every filtered kNN
    # is an exact scan (the graph's share of the recall lost)
    sweep: tuple[tuple[int, int, bool], ...] = ()
    # the peers only: the interpreter of a virtual environment with fast_plaid ("" = no PLAID)
    plaid_python: str = ""

    def __post_init__(self) -> None:
        if not self.sizes or any(n < 100 for n in self.sizes):
            raise InvalidInput(f"bench: sizes must be >= 100 documents each, got {self.sizes}")
        if self.queries < 1 or not 1 <= self.exhaustive_queries <= self.queries:
            raise InvalidInput(
                f"bench: need 1 <= exhaustive_queries ({self.exhaustive_queries}) <= "
                f"queries ({self.queries})"
            )

    def index_config(self, world: EncodedWorld, codec: str | None = None) -> IndexConfig:
        return IndexConfig(
            d_fast=world.d_fast,
            d_frag=world.d_frag,
            max_frags=world.n_frags,
            r_i=world.r_i,
            codec=codec or self.codec,
            hnsw_m=self.hnsw_m,
            hnsw_ef_construction=self.ef_construction,
            fast_storage=self.fast_storage,
        )


def _cores(n: int) -> int:
    return n if n > 0 else (os.cpu_count() or 1)


def _label(n: int) -> str:
    return (
        f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}K" if n % 1000 == 0 else str(n)
    )


# -- build ---------------------------------------------------------------------------------


def build_gallery(
    root: Path,
    world: EncodedWorld,
    config: IndexConfig,
    batch: int,
    threads: int,
    set_threads: SetThreads = _keep_threads,
) -> tuple[Path, dict[str, Any]]:
    """Build (or reuse) the index of `world` under root; returns its path and build figures.

    A complete index with the same config and a ``build.json`` is reused as it is; anything
    else there is destroyed and rebuilt. Timed: add + commit (HNSW insertion included) and
    the final snapshot; not timed: generating the synthetic documents and the loader's
    checks of them.
    """
    path = root / (
        f"g{_label(world.n_docs)}-{config.codec}-{config.fast_storage}"
        f"-m{config.hnsw_m}-efc{config.hnsw_ef_construction}"
    )
    record = path.parent / (path.name + ".build.json")
    try:
        with EmbeddedIndex.open(path, expect=config, readonly=True) as index:
            if len(index) == world.n_docs and record.exists():
                return path, json.loads(record.read_text())
    except (NotFound, InvalidInput, Conflict, CorruptIndex):
        pass  # not there, or not this gallery: rebuilt below
    if path.exists():
        EmbeddedIndex.destroy(path)
    set_threads(threads)
    index = EmbeddedIndex.create(path, config)
    got = fill_index(index, world_source(world, None), batch, progress=True)
    spent = got.timings["index"] + got.timings["commit"]  # generating and checking excluded
    t0 = time.perf_counter()
    index.close()
    close_s = time.perf_counter() - t0
    build = {
        "docs": world.n_docs,
        "add_commit_s": spent,
        "snapshot_s": close_s,
        "docs_per_s": world.n_docs / (spent + close_s),
        "threads": threads,
        "load_avg": os.getloadavg()[0],
        "date": dt.datetime.now().isoformat(timespec="minutes"),
    }
    record.write_text(json.dumps(build, indent=2))
    return path, build


# -- baselines -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    name: str
    recall_10: float
    p50_ms: float
    p95_ms: float
    hits: tuple[tuple[str, ...], ...]


def flat_ip_baseline(index: EmbeddedIndex, queries: Encoded, truth: Sequence[str]) -> Baseline:
    """A plain single-vector system: FAISS IndexFlatIP over the fast vectors, one query at a time."""
    flat = faiss.IndexFlatIP(index.config.d_fast)
    view = index.fast.vectors.view()
    for i in range(0, len(index), 65_536):
        flat.add(np.ascontiguousarray(view[i : i + 65_536]))
    ids = index.docs_at(list(range(len(index))))
    flat.search(queries.fast[:1], 10)  # warm-up
    ms, tops = [], []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        _, rows = flat.search(queries.fast[i : i + 1], 10)
        ms.append((time.perf_counter() - t0) * 1e3)
        tops.append(tuple(ids[int(r)][0] for r in rows[0] if r >= 0))
    return Baseline(
        "FAISS flat IP (fast vectors)",
        recall_at(tops, truth),
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 95)),
        tuple(tops),
    )


# -- one gallery ---------------------------------------------------------------------------


def filtered_recall(
    index: EmbeddedIndex, queries: Encoded, r_t: int, ef: int, threshold: int | None
) -> dict[str, float]:
    """Recall@10 of the keyword-filtered kNN stage against exact search under the same filter."""
    recalls, shares, graph = [], [], 0
    for i in range(len(queries)):
        allowed = index.keyword_rows(queries.keywords[i].top(r_t), "any") & index.alive
        if len(allowed) < 10:
            continue
        q = queries.fast[i]
        approx = index.knn(q, 10, ef, allowed, threshold)
        graph += approx.method.startswith("hnsw")
        exact = index.fast.exact(q, 10, allowed)
        recalls.append(len(set(approx.rows.tolist()) & set(exact.rows.tolist())) / 10)
        shares.append(len(allowed) / len(index))
    return {
        "recall_10": float(np.mean(recalls)) if recalls else float("nan"),
        "admitted": float(np.mean(shares)) if shares else float("nan"),
        "through_hnsw": graph,
        "queries": len(recalls),
    }


def _overlap(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]) -> float:
    n = min(len(a), len(b))
    return float(np.mean([len(set(a[i][:10]) & set(b[i][:10])) / 10 for i in range(n)]))


def warm_page_cache(path: Path) -> None:
    """Read every file of the index once (its fragment store's too), so latencies are those of
    a warm server (the first queries after a cold start read their fragments from disk)."""
    for f in sorted(path.rglob("*")):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def exhaustive_truth(index: EmbeddedIndex, queries: Encoded, k: int = 10) -> list[tuple[str, ...]]:
    """Exhaustive max-sim top-k ids of every query, in one pass over the store (for recall)."""
    if len(index) != index.n_rows:
        raise InvalidInput("bench: exhaustive_truth needs an index without deleted documents")
    _, rows = index.scorer.exhaustive_many(queries.fragments, queries.mask, index.fragments, k)
    ids = index.docs_at(sorted(set(rows.ravel().tolist())))
    return [tuple(ids[int(r)][0] for r in top) for top in rows]


def bench_size(
    cfg: ScaleConfig, root: Path, n: int, set_threads: SetThreads = _keep_threads
) -> dict[str, Any]:
    world = EncodedWorld(n_docs=n)
    path, build = build_gallery(
        root, world, cfg.index_config(world), cfg.batch, _cores(cfg.build_threads), set_threads
    )
    queries, truth = encoded_queries(world, cfg.queries, seed=11)
    base = SearchOptions(num_candidates=cfg.num_candidates, rerank_window=cfg.rerank_window)
    warm_page_cache(path)
    with EmbeddedIndex.open(path, readonly=True) as index:
        index.preload()  # as `isr serve` opens it: no page faults left for the queries
        stats = index.stats()
        set_threads(cfg.threads)
        # steady state: one untimed pass of other queries warms the caches and the
        # allocator's pools, as a serving process's earlier traffic would have
        warm_q, warm_t = encoded_queries(world, cfg.queries, seed=99)
        run_ablations(index, warm_q, warm_t, base, ["full"], progress=False)
        rows = run_ablations(index, queries, truth, base, FAST_ABLATIONS)
        flat = flat_ip_baseline(index, queries, truth)
        knn = filtered_recall(index, queries, 3, cfg.num_candidates, base.exact_threshold)
        # exhaustive latency: single queries, the store split across workers
        ne = cfg.exhaustive_queries
        index.scorer.workers = _cores(cfg.exhaustive_workers)
        rows += run_ablations(index, queries[:ne], truth[:ne], base, SLOW_ABLATIONS)
        index.scorer.workers = 1
        sweep = []
        if n == max(cfg.sizes):
            for nc, rw, exact in cfg.sweep:
                opt = SearchOptions(num_candidates=nc, rerank_window=rw)
                if exact:
                    opt = opt.with_(exact_threshold=10_000_000)
                (r,) = run_ablations(index, queries, truth, opt, ["full"])
                sweep.append({"num_candidates": nc, "rerank_window": rw, "exact_knn": exact,
                              **_row_json(r)})  # fmt: skip
        # exhaustive recall: every query, batched (big GEMMs: torch's own threads)
        set_threads(_cores(cfg.exhaustive_workers))
        ex_tops = exhaustive_truth(index, queries)
        set_threads(cfg.threads)
    by = {r.name: r for r in rows}
    ex, full = by["exhaustive"], by["full"]
    ex_r10 = recall_at(ex_tops, truth)
    nq = float(queries.mask[:ne].sum(1).mean())
    flops = 2.0 * nq * world.n_frags * world.d_frag * n  # one exhaustive query
    return {
        "docs": n,
        "path": str(path),
        "build": build,
        "bytes": stats["bytes"],
        "bytes_total": stats["bytes_total"],
        "ablations": [_row_json(r) for r in rows],
        "knn_vs_exact": knn,
        "flat": {k: v for k, v in asdict(flat).items() if k != "hits"},
        "exhaustive_gflops": flops / (ex.p50_ms / 1e3) / 1e9,
        "speedup_full": ex.p50_ms / full.p50_ms,
        "speedup_flat": ex.p50_ms / flat.p50_ms,
        "exhaustive_r10": ex_r10,
        "recall_kept": full.recall_10 / ex_r10 if ex_r10 else float("nan"),
        "overlap_full_exhaustive": _overlap(full.hits, ex_tops),
        "overlap_flat_exhaustive": _overlap(flat.hits, ex_tops),
        "sweep": [{**w, "recall_kept": w["recall_10"] / ex_r10 if ex_r10 else None} for w in sweep],
    }


def _row_json(r: AblationRow) -> dict[str, Any]:
    out = {k: v for k, v in asdict(r).items() if k not in ("hits", "stages")}
    out["stages"] = {name: {"p50_ms": p50, "p95_ms": p95} for name, p50, p95 in r.stages}
    out["queries"] = len(r.hits)
    return out


def codec_bytes(
    cfg: ScaleConfig, root: Path, set_threads: SetThreads = _keep_threads
) -> dict[str, float]:
    """Fragment bytes per item for each codec, measured on a gallery of cfg.codec_docs."""
    world = EncodedWorld(n_docs=cfg.codec_docs)
    out = {}
    for codec in CODECS:
        config = cfg.index_config(world, codec)
        path, _ = build_gallery(
            root, world, config, cfg.batch, _cores(cfg.build_threads), set_threads
        )
        with EmbeddedIndex.open(path, readonly=True) as index:
            out[codec] = index.stats()["bytes"]["fragments"] / len(index)
    return out


# -- the kernel and the GPU ----------------------------------------------------------------


def kernel_figures(threads: int, set_threads: SetThreads = _keep_threads) -> list[dict[str, float]]:
    """Max-sim kernel vs GEMM vs square matmul at rerank-sized and chunk-sized batches."""
    set_threads(threads)
    return bench_kernel(BenchConfig(sizes=(200, 1000, 4096), repeat=30), torch.device("cpu"))


def gpu_figures(largest: Path | None) -> dict[str, Any] | None:
    """CUDA figures, or None without a CUDA device (said so in the report)."""
    if not torch.cuda.is_available():
        return None
    return gpu_bench(largest)


# -- the run -------------------------------------------------------------------------------


def run(
    cfg: ScaleConfig, workdir: Path, out: Path, set_threads: SetThreads = _keep_threads
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "faiss": faiss.__version__,
            "date": dt.datetime.now().isoformat(timespec="minutes"),
            "load_avg_start": os.getloadavg()[0],
        },
        "kernel": kernel_figures(cfg.threads, set_threads),
        "codec_bytes": codec_bytes(cfg, workdir, set_threads),
        "sizes": [],
    }
    for n in cfg.sizes:
        result["sizes"].append(bench_size(cfg, workdir, n, set_threads))
        (out / "bench.json").write_text(json.dumps(result, indent=2))
    largest = Path(result["sizes"][-1]["path"]) if result["sizes"] else None
    result["gpu"] = gpu_figures(largest)
    result["machine"]["load_avg_end"] = os.getloadavg()[0]
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    (out / "bench.md").write_text(report(result))
    plot(result, out / "latency_vs_size.png")
    return result


def run_peer_sizes(
    cfg: ScaleConfig, workdir: Path, out: Path, set_threads: SetThreads = _keep_threads
) -> str:
    """The peer comparison (:mod:`isr.eval.bench_peers`) at every size; returns the markdown."""
    workdir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    texts, results = [], []
    for n in cfg.sizes:
        world = EncodedWorld(n_docs=n)
        path, build = build_gallery(
            workdir,
            world,
            cfg.index_config(world),
            cfg.batch,
            _cores(cfg.build_threads),
            set_threads,
        )
        queries, truth = encoded_queries(world, cfg.queries, seed=11)
        warm_page_cache(path)
        with EmbeddedIndex.open(path, readonly=True) as index:
            index.preload()  # as `isr serve` opens it
            set_threads(_cores(cfg.exhaustive_workers))
            ex_tops = exhaustive_truth(index, queries)  # batched, untimed: the reference
            set_threads(cfg.threads)
            index.fast.calibrate()  # this machine, now (a reader keeps it in memory)
            base = SearchOptions(num_candidates=cfg.num_candidates, rerank_window=cfg.rerank_window)
            warm_q, warm_t = encoded_queries(world, cfg.queries, seed=99)
            run_ablations(index, warm_q, warm_t, base, ["full"], progress=False)
            if cfg.plaid_python:
                with PlaidPeer(Path(cfg.plaid_python), workdir / f"plaid-{path.name}") as plaid:
                    plaid.build(index)  # or reuse: built once per gallery
                    res = run_peers(
                        index, queries, truth, ex_tops, cfg.num_candidates, cfg.rerank_window,
                        plaid=plaid,
                    )  # fmt: skip
            else:
                res = run_peers(
                    index, queries, truth, ex_tops, cfg.num_candidates, cfg.rerank_window
                )
        res["build"] = build
        results.append(res)
        texts.append(render_peers(res))
        jsonable = [
            {**r, "rows": [asdict(x) for x in r["rows"]], "knn_cost": asdict(r["knn_cost"])}
            for r in results
        ]
        (out / "bench_peers.json").write_text(json.dumps(jsonable, indent=2))
    text = "\n".join(texts)
    (out / "bench_peers.md").write_text(text)
    return text


# -- output --------------------------------------------------------------------------------


def report(res: dict[str, Any]) -> str:
    return render(res)


def plot(res: dict[str, Any], file: Path) -> None:
    plot_latency(res, file)
    plot_recall_speedup(res, file.with_name("recall_vs_speedup.png"))


def sweep_point(text: str) -> tuple[int, int, bool]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "exact"):
        raise ValueError(text)
    return int(parts[0]), int(parts[1]), len(parts) == 3
