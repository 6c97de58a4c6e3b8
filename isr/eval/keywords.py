"""Keyword-head metrics: mean average precision and the pre-screening statistics of Cao et al.

Entry points: :func:`mean_average_precision` (macro over labels with a positive, and micro) and
:func:`screen_stats` (how many ground-truth items a top-R_I / top-R_T keyword screen keeps, and
how much of the gallery it admits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isr.errors import InvalidInput

__all__ = ["MeanAP", "ScreenStats", "average_precision", "mean_average_precision", "screen_stats"]


@dataclass(frozen=True)
class MeanAP:
    """macro: mean AP over the labels with at least one positive; micro: AP of all
    (item, label) pairs ranked together; labels_scored: how many labels the macro mean covers."""

    macro: float
    micro: float
    labels_scored: int


@dataclass(frozen=True)
class ScreenStats:
    """kept: share of queries whose ground-truth item shares a label with them; admitted: mean
    share of the gallery sharing a label with a query; n_queries: queries counted."""

    kept: float
    admitted: float
    n_queries: int


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one ranking: sum over score thresholds of (recall step) x precision.

    scores (N,), targets (N,) bool with at least one True. Items with equal scores form one
    threshold (as in scikit-learn's ``average_precision_score``), so ties are not broken in
    anyone's favour.
    """
    y = np.asarray(targets, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != y.shape or s.ndim != 1:
        raise InvalidInput(f"scores {s.shape} and targets {y.shape} must be equal 1-d shapes")
    n_pos = int(y.sum())
    if n_pos == 0:
        raise InvalidInput("average_precision: targets have no positive item")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each tie group
    tp = np.cumsum(y)[last]  # (G,) true positives above each threshold
    precision = tp / (last + 1)
    recall_step = np.diff(np.r_[0, tp]) / n_pos
    return float((recall_step * precision).sum())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> MeanAP:
    """scores (N, L) label scores of N items, targets (N, L) multi-hot. Labels without a
    positive item are left out of the macro mean (their AP is undefined)."""
    s, y = np.asarray(scores), np.asarray(targets).astype(bool)
    if s.ndim != 2 or s.shape != y.shape:
        raise InvalidInput(f"scores {s.shape} and targets {y.shape} must be equal (N, L) shapes")
    if not np.isfinite(s).all():
        raise InvalidInput("scores contain NaN or inf")
    cols = np.flatnonzero(y.any(0))
    if cols.size == 0:
        raise InvalidInput("targets have no positive item for any label")
    macro = float(np.mean([average_precision(s[:, j], y[:, j]) for j in cols]))
    micro = average_precision(s.ravel(), y.ravel())
    return MeanAP(macro=macro, micro=micro, labels_scored=int(cols.size))


def screen_stats(img_topk: np.ndarray, txt_topk: np.ndarray, truth: np.ndarray) -> ScreenStats:
    """The keyword screen of Cao et al. on a gallery of images queried by texts.

    img_topk (I, R_I) label ids each gallery item keeps; txt_topk (T, R_T) label ids each query
    uses; truth (T,) the gallery index of each query's ground-truth item. An item passes a
    query's screen when they share at least one label. Label ids are non-negative integers.
    """
    gi, qt, gt = np.asarray(img_topk), np.asarray(txt_topk), np.asarray(truth)
    if gi.ndim != 2 or qt.ndim != 2 or gt.ndim != 1:
        raise InvalidInput(
            f"expected img_topk (I, R_I), txt_topk (T, R_T), truth (T,); got "
            f"{gi.shape}, {qt.shape}, {gt.shape}"
        )
    if qt.shape[0] != gt.shape[0] or qt.shape[0] == 0 or gi.shape[0] == 0:
        raise InvalidInput(f"{qt.shape[0]} queries but {gt.shape[0]} truths (need >= 1 of each)")
    for name, a in (("img_topk", gi), ("txt_topk", qt), ("truth", gt)):
        if not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
            raise InvalidInput(f"{name}: expected non-negative integer ids")
    if gt.max() >= gi.shape[0]:
        raise InvalidInput(f"truth: id {int(gt.max())} outside the gallery of {gi.shape[0]}")
    n_labels = int(max(gi.max(initial=0), qt.max(initial=0))) + 1
    g = np.zeros((gi.shape[0], n_labels), dtype=np.float32)  # (I, L) item has label
    q = np.zeros((qt.shape[0], n_labels), dtype=np.float32)  # (T, L) query uses label
    np.put_along_axis(g, gi, 1.0, axis=1)
    np.put_along_axis(q, qt, 1.0, axis=1)
    shared = (q @ g.T) > 0  # (T, I)
    kept = shared[np.arange(gt.size), gt]
    return ScreenStats(
        kept=float(kept.mean()), admitted=float(shared.mean(1).mean()), n_queries=int(gt.size)
    )
