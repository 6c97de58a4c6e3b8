"""Process-wide compute settings. Entry points: :func:`set_threads`, :func:`pick_device`.

torch and FAISS each keep a global thread pool. On a small machine serving one query at a
time, one thread per query often beats two: a reranking GEMM of ~1 ms loses more to
fork/join and to cores busy elsewhere than it gains. Exhaustive scans want every core.
"""

from __future__ import annotations

import faiss
import torch

from isr.errors import InvalidInput

__all__ = ["pick_device", "set_threads"]


def set_threads(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"threads must be an integer >= 1, got {n!r}")
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def pick_device(device: str | None) -> str:
    """The device a model or scorer runs on: the one asked for, else CUDA when there is one
    (the rule of :class:`~isr.plugin.store.maxsim.MaxSimScorer`, so encoder and scorer agree)."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")
