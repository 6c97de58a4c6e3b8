"""Text-image similarity of the three models, in torch, for training and validation.

Entry points: :func:`fast_scores` (Eq. 3, F), :func:`maxsim_scores` (Eq. 5, B and I: the same
sum-of-max over whatever fragments a side has; for I those include the code outputs) and
:func:`recall_at_k` (R@1/5/10 in both directions with five captions per image).
The engine has its own scorer over stored fragments; this one is the reference it must match.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["fast_scores", "maxsim_scores", "recall_at_k"]

# Large enough to lose every max, small enough for float16 (max 65504).
_NEG = -1.0e4


def fast_scores(qt: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
    """cos(w_1, r_1) for every pair: qt (T, d) and gi (I, d) L2-normalised -> (T, I)."""
    return qt @ gi.T


def maxsim_scores(
    w: torch.Tensor,
    wmask: torch.Tensor,
    r: torch.Tensor,
    rmask: torch.Tensor,
    budget: int = 1 << 21,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """s(W, R) = sum_i max_j cos(w_i, r_j) over real fragments, for every text-image pair.

    w: (T, n, d) text fragments, wmask (T, n); r: (I, m, d) image fragments, rmask (I, m);
    all L2-normalised. Returns (T, I). Texts go in chunks so that the (t, n, I, m) interaction
    tensor holds about ``budget`` elements at most (at least one text per chunk). The default
    (8 MiB in float32) keeps each chunk's tensors below glibc's largest mmap threshold (32
    MiB): a larger block is mapped fresh, and page-faulted, on every call; with one 42 MiB chunk
    a training step's max-sim forward + backward took 1.5x as long (96 vs 65 ms, float32).
    ``dtype``: compute the interactions in this type (bfloat16 makes a CPU training step with
    AMX several times faster on this, its largest tensor); the sums are float32 either way.
    """
    if dtype is not None:
        w, r = w.to(dtype), r.to(dtype)
    chunk = max(1, budget // max(1, r.shape[0] * w.shape[1] * r.shape[1]))
    # Training images and code tokens have no padding: skipping the fill then saves a pass
    # (and its backward) over the largest tensor, about 40% of an inflated training step.
    padded = not bool(rmask.all())
    out = []
    n_i, m, d = r.shape
    rt = r.reshape(n_i * m, d).T  # (d, I*m)
    for s in range(0, w.shape[0], chunk):
        wc, mc = w[s : s + chunk], wmask[s : s + chunk]
        t, n = wc.shape[:2]
        # One GEMM into the (t, n, I, m) layout it produces: the max then reads contiguous
        # memory and neither pass nor its backward copies a permuted (t, I, n, m) tensor
        # (10-15% of an inflated step's max-sim, measured).
        sim = (wc.reshape(t * n, d) @ rt).view(t, n, n_i, m)
        if padded:
            sim = sim.masked_fill(~rmask[None, None], _NEG)
        best = sim.max(-1).values  # (t, n, I)
        best = best.float().masked_fill(~mc[:, :, None], 0.0)
        out.append(best.sum(1))  # (t, I)
    return torch.cat(out) if out else w.new_zeros((0, r.shape[0]), dtype=torch.float32)


def recall_at_k(
    sims: np.ndarray, caps_per_image: int = 5, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Recall in percent, both directions, for sims (T, I) with T = caps_per_image * I.

    Caption t belongs to image t // caps_per_image. T->I: the rank of each caption's image.
    I->T: the best rank among the image's captions (any of its captions counts).
    Keys: "t2i_r1", "t2i_r5", ..., "i2t_r10", and "rsum" (the sum of all six).
    """
    t, n = sims.shape
    assert t == caps_per_image * n, (sims.shape, caps_per_image)
    own = np.arange(t) // caps_per_image  # (T,)
    pos = sims[np.arange(t), own]  # (T,)
    t2i_rank = (sims > pos[:, None]).sum(1)  # (T,) images scored strictly higher
    st = sims.T  # (I, T)
    best_own = st[np.arange(n)[:, None], _own_caps(n, caps_per_image)].max(1)  # (I,)
    i2t_rank = (st > best_own[:, None]).sum(1)  # (I,) captions scored above its best own one
    out: dict[str, float] = {}
    for k in ks:
        out[f"t2i_r{k}"] = float(100.0 * (t2i_rank < k).mean())
    for k in ks:
        out[f"i2t_r{k}"] = float(100.0 * (i2t_rank < k).mean())
    out["rsum"] = float(sum(out.values()))
    return out


def _own_caps(n: int, c: int) -> np.ndarray:
    return np.arange(n)[:, None] * c + np.arange(c)[None, :]  # (I, c)
