"""Batched k-means that reduces an image's many boxes / patches to k centres (the paper uses 32).

Entry point: :func:`kmeans_reduce`. It works on a whole batch at once in torch, and is
deterministic without a random generator: the centres start from farthest-point seeding
(the first seed is the region nearest the item's mean), so an item's centres never depend on
which batch it arrived in or on a global seed.
"""

from __future__ import annotations

import torch

__all__ = ["kmeans_reduce"]


def kmeans_reduce(
    x: torch.Tensor, mask: torch.Tensor, k: int, iters: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster each item's valid regions into at most k centres.

    x:    (B, m, D) region features.
    mask: (B, m) bool, True where a region is real.
    Returns centres (B, k, D) and their mask (B, k): an item with c < k valid regions keeps them
    unchanged (its first c centres are those regions, in order) and the rest are masked out.
    """
    assert x.ndim == 3 and mask.shape == x.shape[:2], (x.shape, mask.shape)
    assert k > 0
    b, m, _ = x.shape
    if m <= k:
        pad = k - m
        return (
            torch.nn.functional.pad(x, (0, 0, 0, pad)),
            torch.nn.functional.pad(mask, (0, pad), value=False),
        )
    xf = x.float()
    valid = mask.float()  # (B, m)
    n_valid = mask.sum(1)  # (B,)
    big = torch.finfo(xf.dtype).max

    # Farthest-point seeding: start at the region nearest the mean, then repeatedly add the
    # region farthest from every chosen centre.
    mean = (xf * valid[..., None]).sum(1) / n_valid.clamp(min=1)[:, None]  # (B, D)
    d_mean = ((xf - mean[:, None]) ** 2).sum(-1).masked_fill(~mask, big)  # (B, m)
    idx = torch.empty(b, k, dtype=torch.long, device=x.device)
    idx[:, 0] = d_mean.argmin(1)
    rows = torch.arange(b, device=x.device)
    d_min = ((xf - xf[rows, idx[:, 0]][:, None]) ** 2).sum(-1)  # (B, m)
    for j in range(1, k):
        # Never re-pick a padded region; an item out of valid regions re-picks a chosen one,
        # and that centre is masked out below.
        idx[:, j] = d_min.masked_fill(~mask, -1.0).argmax(1)
        d_new = ((xf - xf[rows, idx[:, j]][:, None]) ** 2).sum(-1)
        d_min = torch.minimum(d_min, d_new)
    c = xf[rows[:, None], idx]  # (B, k, D)

    for _ in range(iters):
        d = torch.cdist(xf, c) ** 2  # (B, m, k)
        assign = d.argmin(-1)  # (B, m)
        onehot = torch.nn.functional.one_hot(assign, k).float() * valid[..., None]  # (B, m, k)
        count = onehot.sum(1)  # (B, k)
        total = onehot.transpose(1, 2) @ xf  # (B, k, D)
        # An empty cluster keeps its previous centre rather than collapsing to zero.
        c = torch.where(count[..., None] > 0, total / count.clamp(min=1)[..., None], c)

    # Items with fewer than k valid regions keep exactly those regions.
    few = n_valid < k  # (B,)
    if few.any():
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :k]  # valid first
        kept = xf[rows[:, None], order]  # (B, k, D)
        c = torch.where(few[:, None, None], kept, c)
    out_mask = torch.arange(k, device=x.device)[None, :] < n_valid.clamp(max=k)[:, None]
    c = c.masked_fill(~out_mask[..., None], 0.0)
    return c.to(x.dtype), out_mask
