"""Keyword heads: multi-label classifiers on a tower's output (Cao et al.'s pre-screening).

Entry point: :func:`make_head` builds one tower's head for ``EncoderConfig.keyword_head``:

- ``"linear"`` (the paper's): one linear layer on the first output token.
- ``"attn"``: attention pooling with one learned query per label over every real output token
  (the label's own pooled vector, then a per-label dot product), so a label can read the token
  that names it instead of what the first token kept of it.
- ``"maxsim"``: each label is a vector in the fragment space, shared by the two towers (the
  model's ``kw_labels``); its logit is a scaled max over the item's fragments of the cosine to
  it, plus a per-tower bias: one label space for texts and images, read by max-sim as the
  retrieval score is.

Every head's output bias starts at the label's log prior odds (:func:`prior_logits`), so at
step 0 it predicts each label's training frequency rather than p = 0.5 for all: with ASL's
negative focusing (gamma- = 3) a frequent label predicted at p ~ 0.3 on a negative costs almost
nothing, so heads started at 0 could keep every frequent label high for every input.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from isr.errors import InvalidInput

__all__ = ["KEYWORD_HEADS", "AttnHead", "LinearHead", "MaxSimHead", "make_head", "prior_logits"]

KEYWORD_HEADS: tuple[str, ...] = ("linear", "attn", "maxsim")


def prior_logits(labels: np.ndarray, eps: float = 0.5) -> torch.Tensor:
    """labels (N, L) multi-hot -> (L,) log odds of each label's smoothed frequency."""
    y = np.asarray(labels, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0:
        raise InvalidInput(f"labels: expected a non-empty (N, L) array, got {y.shape}")
    p = (y.sum(0) + eps) / (y.shape[0] + 2 * eps)
    return torch.from_numpy(np.log(p / (1 - p))).float()


class LinearHead(nn.Module):
    """logits = W h_0 + b on the first output token. ``fc`` keeps the paper head's tensor
    names ("weight", "bias" under the tower's head) readable by old bundles."""

    def __init__(self, hidden: int, n_labels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_labels, hidden) * hidden**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(
        self, hs: torch.Tensor, mask: torch.Tensor, frags: torch.Tensor, fmask: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        return hs[:, 0] @ self.weight.T + self.bias  # (B, L)


class AttnHead(nn.Module):
    """One query per label attends over the real tokens; logit_l = <pooled_l, w_l> + b_l."""

    def __init__(self, hidden: int, n_labels: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_labels, hidden) * hidden**-0.5)
        self.weight = nn.Parameter(torch.randn(n_labels, hidden) * hidden**-0.5)
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(
        self, hs: torch.Tensor, mask: torch.Tensor, frags: torch.Tensor, fmask: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        h = hs.float()  # (B, n, H)
        a = torch.einsum("bnh,lh->bln", h, self.query.float()) / math.sqrt(h.shape[-1])
        a = a.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)  # (B, L, n)
        pooled = torch.einsum("bln,bnh->blh", a, h)  # (B, L, H)
        return (pooled * self.weight.float()).sum(-1) + self.bias  # (B, L)


class MaxSimHead(nn.Module):
    """logit_l = scale * max_n cos(frag_n, e_l) + b_l with e_l the shared label vectors."""

    def __init__(self, n_labels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.bias = nn.Parameter(torch.zeros(n_labels))

    def forward(
        self, hs: torch.Tensor, mask: torch.Tensor, frags: torch.Tensor, fmask: torch.Tensor,
        labels: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        assert labels is not None
        e = nn.functional.normalize(labels.float(), dim=-1)  # (L, d)
        s = torch.einsum("bnd,ld->bln", frags.float(), e)  # (B, L, n)
        s = s.masked_fill(~fmask[:, None, :], float("-inf")).amax(-1)  # (B, L)
        return self.scale * s + self.bias


def make_head(kind: str, hidden: int, n_labels: int) -> nn.Module:
    if kind == "linear":
        return LinearHead(hidden, n_labels)
    if kind == "attn":
        return AttnHead(hidden, n_labels)
    if kind == "maxsim":
        return MaxSimHead(n_labels)
    raise InvalidInput(f"keyword_head {kind!r} is not one of {KEYWORD_HEADS}")
