"""Training losses, one class each, hyper-parameters in ``__init__``.

Entry points: :class:`TripletLoss` (Eq. 4), :class:`DistillLoss` (Eq. 6), :class:`AsymmetricLoss`
(ASL, Ridnik et al. 2021, for the keyword heads).

Convention: a similarity matrix ``s`` is (B, B) with s[t, v] = score(text t, image v) and the
matching pairs on the diagonal (a batch holds B distinct images, one caption each).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from isr.errors import InvalidInput

__all__ = ["AsymmetricLoss", "DistillLoss", "TripletLoss"]


def _check_square(s: torch.Tensor, name: str) -> None:
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise InvalidInput(
            f"{name}: expected a square (B, B) similarity matrix, got {tuple(s.shape)}"
        )


class TripletLoss(nn.Module):
    """Bidirectional hinge loss over in-batch negatives (Eq. 4).

    For each text t (positive image t) and negative image v != t:
    [margin - s[t, t] + s[t, v]]_+, and for each image v and negative text t != v:
    [margin - s[v, v] + s[t, v]]_+. ``negatives="sum"`` adds the hinges of all negatives
    (VSE), ``"hardest"`` keeps the largest one per anchor (VSE++). The two directions are
    added, and the result is averaged over the B anchors.

    margin: 0.2 for the fast model, 0.6 for base and inflated (the paper's values).
    """

    def __init__(self, margin: float, negatives: Literal["sum", "hardest"] = "sum") -> None:
        super().__init__()
        if margin < 0:
            raise InvalidInput(f"margin must be >= 0, got {margin}")
        if negatives not in ("sum", "hardest"):
            raise InvalidInput(f"negatives must be 'sum' or 'hardest', got {negatives!r}")
        self.margin = margin
        self.negatives = negatives

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        _check_square(s, "TripletLoss")
        pos = s.diagonal()  # (B,)
        eye = torch.eye(s.shape[0], dtype=torch.bool, device=s.device)
        cost_t = (self.margin - pos[:, None] + s).clamp(min=0).masked_fill(eye, 0.0)  # text anchor
        cost_v = (self.margin - pos[None, :] + s).clamp(min=0).masked_fill(eye, 0.0)  # image anchor
        if self.negatives == "hardest":
            per_anchor = cost_t.max(1).values + cost_v.max(0).values  # (B,)
        else:
            per_anchor = cost_t.sum(1) + cost_v.sum(0)  # (B,)
        return per_anchor.mean()


class DistillLoss(nn.Module):
    """Cross-entropy from teacher to student over in-batch similarities (Eq. 6), both directions.

    Targets p = softmax(tau_t * s_teacher) and predictions log q = log_softmax(tau_s * s_student),
    taken along each row (text -> images) and each column (image -> texts); the loss is
    -sum p log q averaged over rows, plus the same over columns. This differs from KL(p || q)
    only by the teacher's entropy, a constant for the student.

    The temperatures multiply the scores: with cosine scores in [-1, 1] a multiplier of 12
    gives logits in [-12, 12], whereas dividing by 12 would leave an almost uniform softmax.
    Paper values: tau_t = tau_s = 12 for I -> B; tau_t = 2, tau_s = 12 for B -> F (the base
    teacher's max-sim sums span a range n times wider than a cosine, hence its smaller tau).
    """

    def __init__(self, tau_t: float, tau_s: float) -> None:
        super().__init__()
        if tau_t <= 0 or tau_s <= 0:
            raise InvalidInput(f"temperatures must be > 0, got tau_t={tau_t}, tau_s={tau_s}")
        self.tau_t = tau_t
        self.tau_s = tau_s

    def forward(self, s_student: torch.Tensor, s_teacher: torch.Tensor) -> torch.Tensor:
        _check_square(s_student, "DistillLoss student")
        if s_teacher.shape != s_student.shape:
            raise InvalidInput(
                f"DistillLoss: teacher {tuple(s_teacher.shape)} != student {tuple(s_student.shape)}"
            )
        t = s_teacher.detach().float() * self.tau_t
        s = s_student.float() * self.tau_s
        rows = -(F.softmax(t, 1) * F.log_softmax(s, 1)).sum(1).mean()  # text -> images
        cols = -(F.softmax(t, 0) * F.log_softmax(s, 0)).sum(0).mean()  # image -> texts
        return rows + cols


class AsymmetricLoss(nn.Module):
    """ASL for multi-label classification (Ridnik et al., ICCV 2021).

    With p = sigmoid(logit) and the shifted probability p_m = max(p - clip, 0):
    positive labels: -(1 - p)^gamma_pos * log(p);
    negative labels: -p_m^gamma_neg * log(1 - p_m).
    Summed over labels, averaged over the batch. Defaults gamma_pos=0, gamma_neg=3, clip=0.05
    (Cao et al.'s keyword heads). ``eps`` keeps the logs finite.
    """

    def __init__(
        self, gamma_pos: float = 0.0, gamma_neg: float = 3.0, clip: float = 0.05, eps: float = 1e-8
    ) -> None:
        super().__init__()
        if gamma_pos < 0 or gamma_neg < 0:
            raise InvalidInput(f"gammas must be >= 0, got {gamma_pos}, {gamma_neg}")
        if not 0.0 <= clip < 1.0:
            raise InvalidInput(f"clip must be in [0, 1), got {clip}")
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.eps = eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.shape != targets.shape:
            raise InvalidInput(
                f"AsymmetricLoss: logits {tuple(logits.shape)} != targets {tuple(targets.shape)}"
            )
        y = targets.float()
        p = torch.sigmoid(logits.float())
        p_m = (p - self.clip).clamp(min=0)
        pos = (1 - p) ** self.gamma_pos * torch.log(p.clamp(min=self.eps))
        neg = p_m**self.gamma_neg * torch.log((1 - p_m).clamp(min=self.eps))
        return -(y * pos + (1 - y) * neg).sum(1).mean()
