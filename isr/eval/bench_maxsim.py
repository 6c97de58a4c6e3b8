"""Benchmark of the max-sim kernel and of exhaustive top-k over a fragment store.

Entry point: ``isr eval bench-maxsim`` (``python eval/bench_maxsim.py``; or :func:`bench` from Python). Prints two tables:

1. the kernel (:func:`isr.plugin.store.maxsim.maxsim`) on C documents of n fragments against a query of
   nq fragments, in GFLOP/s (2 * nq * n * d * C flops), beside the plain GEMM of the same shape
   (``(nq, d) @ (d, C*n)``, the kernel without its masking and reductions) and a square matmul
   of the same flops, which stands for the machine's matmul peak;
2. exhaustive top-k over a store of ``--store-rows`` rows (``--codec``), in ms per query,
   including reading the codes from the memory map and decoding them.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from isr.device import pick_device
from isr.plugin import FragmentStore, MaxSimScorer, maxsim


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple[int, ...] = (1000, 10_000, 100_000)
    nq: int = 32
    n: int = 32
    d: int = 128
    repeat: int = 3
    store_rows: int = 100_000
    codec: str = "fp16"
    k: int = 10
    device: str | None = None
    seed: int = 0


def _timeit_interleaved(
    fns: Sequence[Callable[[], object]], repeat: int, device: torch.device
) -> list[float]:
    """Median wall seconds of each fn over `repeat` rounds, after one warm-up round.

    The functions run in turn within each round, so a burst of load from elsewhere (a shared
    machine) slows all of them alike instead of skewing the ratio between them.
    """

    def once(fn: Callable[[], object]) -> float:
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for fn in fns:
        once(fn)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            times[i].append(once(fn))
    return [statistics.median(t) for t in times]


def _timeit(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """Median wall seconds of fn over `repeat` runs, after one warm-up run."""
    return _timeit_interleaved([fn], repeat, device)[0]


def _unit(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def _available_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _bench_size(
    cfg: BenchConfig, c: int, q: torch.Tensor, rng: np.random.Generator, device: torch.device
) -> dict[str, float]:
    qm = torch.ones(cfg.nq, dtype=torch.bool, device=device)
    docs = torch.from_numpy(_unit(rng, (c, cfg.n, cfg.d))).to(device)  # (C, n, d)
    dm = torch.ones(c, cfg.n, dtype=torch.bool, device=device)
    flops = 2.0 * cfg.nq * cfg.n * cfg.d * c
    flat = docs.view(c * cfg.n, cfg.d)  # (C*n, d)
    m = round((flops / 2) ** (1 / 3))
    a = torch.randn(m, m, device=device)
    b = torch.randn(m, m, device=device)
    t_kernel, t_gemm, t_square = _timeit_interleaved(
        [lambda: maxsim(q, qm, docs, dm), lambda: q @ flat.T, lambda: a @ b], cfg.repeat, device
    )
    return {
        "C": c,
        "kernel_ms": 1e3 * t_kernel,
        "kernel_gflops": flops / t_kernel / 1e9,
        "gemm_gflops": flops / t_gemm / 1e9,
        "square_m": m,
        "square_gflops": 2.0 * m**3 / t_square / 1e9,
    }


def bench_kernel(cfg: BenchConfig, device: torch.device) -> list[dict[str, float]]:
    rng = np.random.default_rng(cfg.seed)
    q = torch.from_numpy(_unit(rng, (cfg.nq, cfg.d))).to(device)  # (nq, d)
    rows = []
    for c in cfg.sizes:
        # docs + GEMM result + a same-size square problem, with room to spare
        need = 4 * c * cfg.n * (cfg.d + 2 * cfg.nq)
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else _available_bytes()
        if 2 * need > free:
            print(f"skipping C={c}: needs ~{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
            continue
        rows.append(_bench_size(cfg, c, q, rng, device))
    peak = max((r["square_gflops"] for r in rows), default=float("nan"))
    for r in rows:
        r["pct_peak"] = 100 * r["kernel_gflops"] / peak
    return rows


def bench_exhaustive(cfg: BenchConfig, device: torch.device, workdir: Path) -> dict[str, float]:
    rng = np.random.default_rng(cfg.seed + 1)
    t = time.perf_counter()
    store = FragmentStore.create(workdir / "store", cfg.d, cfg.n, cfg.codec)
    step = 5000
    pool = _unit(rng, (step, cfg.n, cfg.d))  # shuffled per batch: random data costs the most here
    for i in range(0, cfg.store_rows, step):
        b = min(step, cfg.store_rows - i)
        store.append(pool[rng.permutation(step)[:b]], np.ones((b, cfg.n), bool))
    t_build = time.perf_counter() - t
    q = _unit(rng, (cfg.nq, cfg.d))
    qm = np.ones(cfg.nq, bool)
    scorer = MaxSimScorer(device=device)
    t_search = _timeit(lambda: scorer.exhaustive(q, qm, store, cfg.k), cfg.repeat, device)
    flops = 2.0 * cfg.nq * cfg.n * cfg.d * cfg.store_rows
    store.close()
    return {
        "rows": cfg.store_rows,
        "store_mib": cfg.store_rows * store.nbytes_per_row() / 2**20,
        "build_s": t_build,
        "search_ms": 1e3 * t_search,
        "gflops": flops / t_search / 1e9,
    }


def bench(cfg: BenchConfig, workdir: Path) -> tuple[list[dict[str, float]], dict[str, float]]:
    device = pick_device(cfg.device, "bench")
    return bench_kernel(cfg, device), bench_exhaustive(cfg, device, workdir)


def report(cfg: BenchConfig, workdir: Path | None = None) -> None:
    """Run :func:`bench` (the store built in a temporary folder under `workdir`) and print it."""
    dev = str(pick_device(cfg.device, "bench"))
    name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"{os.cpu_count()} CPUs"
    print(f"device {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"nq={cfg.nq} n={cfg.n} d={cfg.d}, median of {cfg.repeat} after 1 warm-up\n")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        kernel, exh = bench(cfg, Path(tmp))
    print(
        f"{'C':>8} {'ms':>9} {'max-sim GF/s':>13} {'GEMM GF/s':>10} "
        f"{'square m':>9} {'square GF/s':>12} {'% peak':>7}"
    )
    for r in kernel:
        print(
            f"{r['C']:>8} {r['kernel_ms']:>9.2f} {r['kernel_gflops']:>13.1f} "
            f"{r['gemm_gflops']:>10.1f} {r['square_m']:>9} {r['square_gflops']:>12.1f} "
            f"{r['pct_peak']:>7.1f}"
        )
    print(
        f"\nexhaustive top-{cfg.k}, {exh['rows']} rows, {cfg.codec} store "
        f"({exh['store_mib']:.0f} MiB, built in {exh['build_s']:.1f} s): "
        f"{exh['search_ms']:.1f} ms/query ({exh['gflops']:.1f} GF/s)"
    )
