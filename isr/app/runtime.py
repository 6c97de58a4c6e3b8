"""Process-wide compute settings. Entry point: :func:`set_threads` (the device rule is
:func:`isr.device.pick_device`).

torch and FAISS each keep a global thread pool, and so do the BLAS libraries loaded beside
them (numpy's OpenBLAS, FAISS's OpenBLAS; threadpoolctl reaches those). On a small machine
serving one query at a time, one thread per query often beats two: a reranking GEMM of ~1 ms loses more to
fork/join and to cores busy elsewhere than it gains. Exhaustive scans want every core.
"""

from __future__ import annotations

import faiss
import torch
from threadpoolctl import threadpool_limits

from isr.errors import InvalidInput

__all__ = ["set_threads"]


def set_threads(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"threads must be an integer >= 1, got {n!r}")
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(limits=n)  # every OpenBLAS/MKL/OpenMP pool loaded so far, process-wide
