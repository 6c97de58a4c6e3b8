"""The scale benchmark's device figures (issue 7): bandwidth, kernel, rerank, exhaustive.

Entry point: :func:`gpu_bench(index_path, device="cuda")`. Measured on the device:

- memory bandwidth: a device-to-device copy of ``bw_bytes`` (bytes read + written / time);
- the max-sim kernel in GFLOP/s on 1,000 random documents, float32;
- the rerank of 1,000 candidates of the index: the engine's path (gather the codes from the
  memory-mapped store, copy them to the device, decode, score) and the kernel alone on
  fragments already resident;
- exhaustive max-sim over every document with the codes resident in device memory, against
  the time to read those code bytes once at the measured bandwidth.

Runs on any torch device, so the CPU test suite exercises it on a tiny index.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isr.plugin import EmbeddedIndex, MaxSimScorer, maxsim

__all__ = ["gpu_bench"]


def _timed(fn: Callable[[], object], device: torch.device, repeat: int = 5) -> float:
    """Median seconds of fn over `repeat` runs after one warm-up."""

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    once()
    return statistics.median(once() for _ in range(repeat))


def _bandwidth(dev: torch.device, nbytes: int) -> float:
    """Bytes per second of a device-to-device copy (each byte read once and written once)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    return 2 * nbytes / _timed(lambda: dst.copy_(src), dev)


def _unit(shape: tuple[int, ...], device: torch.device, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=gen).to(device)
    return x / x.norm(dim=-1, keepdim=True)


def gpu_bench(
    index_path: Path | None,
    device: str = "cuda",
    bw_bytes: int = 2 * 2**30,
    chunk_rows: int = 65_536,
    rerank: int = 1000,
) -> dict[str, Any]:
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    out: dict[str, Any] = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    }
    bw = _bandwidth(dev, bw_bytes)
    out["bandwidth_GBps"] = bw / 1e9

    q = _unit((32, 128), dev, gen)
    qm = torch.ones(32, dtype=torch.bool, device=dev)
    docs = _unit((1000, 32, 128), dev, gen)
    dm = torch.ones(1000, 32, dtype=torch.bool, device=dev)
    t = _timed(lambda: maxsim(q, qm, docs, dm), dev, 20)
    out["kernel_1000_ms"] = 1e3 * t
    out["kernel_gflops"] = 2.0 * 32 * 32 * 128 * 1000 / t / 1e9
    if index_path is None:
        return out

    with EmbeddedIndex.open(index_path, readonly=True) as index:
        store = index.fragments
        n = len(store)
        rng = np.random.default_rng(0)
        rows = np.sort(rng.choice(n, size=min(rerank, n), replace=False))
        qn = q[:12].cpu().numpy()  # a query of 12 fragments, as the synthetic queries have
        qmn = np.ones(12, bool)
        scorer = MaxSimScorer(device=dev)
        t = _timed(lambda: scorer.score_rows(qn, qmn, store, rows), dev, 20)
        out[f"rerank_{len(rows)}_engine_ms"] = 1e3 * t
        codes, cnt = store.gather_codes(rows)
        x = store.codec.decode_torch(torch.from_numpy(codes).to(dev))
        slot = torch.arange(store.max_frags, device=dev)
        m = slot[None, :] < torch.from_numpy(cnt).to(dev)[:, None]
        q12, qm12 = q[:12].contiguous(), qm[:12]
        t = _timed(lambda: maxsim(q12, qm12, x, m), dev, 20)
        out[f"rerank_{len(rows)}_resident_ms"] = 1e3 * t

        # every code on the device, then one exhaustive pass
        chunks = [torch.from_numpy(c).to(dev) for _, c, _ in store.iter_code_chunks(chunk_rows)]
        counts = torch.from_numpy(store.counts(np.arange(n))).to(dev)
        resident = sum(c.numel() for c in chunks)

        def exhaustive() -> torch.Tensor:
            best = []
            for i, c in enumerate(chunks):
                xs = store.codec.decode_torch(c)
                ms = slot[None, :] < counts[i * chunk_rows : i * chunk_rows + c.shape[0], None]
                s = maxsim(q12, qm12, xs, ms)
                best.append(torch.topk(s, min(10, s.shape[0])).values)
            return torch.topk(torch.cat(best), 10).values

        t = _timed(exhaustive, dev, 3)
        out["exhaustive_docs"] = n
        out["exhaustive_ms"] = 1e3 * t
        out["fragment_bytes_resident"] = resident
        out["read_once_ms"] = 1e3 * resident / bw
        out["exhaustive_over_read_once"] = t / (resident / bw)
    return out
