"""An index's own screen exchange rate, measured on a labelled sample (``isr index calibrate-screen``).

Entry point: :func:`calibrate`. The stops of :func:`isr.plugin.keyword_rule.select_labels` read a
query label's p as the chance that a matching gallery document stores it, and the gain stop
trades that chance against the label's admitted share at one rate. Both belong to the gallery,
not to the model: for an image query against captions, p (the image has the label) overstates
the chance that one of its captions stores it by the share of an image's captions naming such a
label (~0.67 on world10k, ~0.53 on Flickr30K's single captions), and the rate at which kept
ground truth pays for admitted documents differs with how many captions an image has. So on a
labelled split the report does not use (dev), the pair (scale, gain) that admits least while
keeping ``kept`` of that split's ground truth is picked, the index's other defaults held:

- ``scale`` from :data:`SCALES` and the measured statistic sum s / sum p over each query's top
  3 labels (s: the share of the query's relevant documents storing the label, the chance p
  should have been; reported as ``measured``). The statistic alone is not the best value: it is
  pulled up by the low-p labels a caption stores anyway (world10k dev: 0.76 over the top 3, the
  best pair has 0.5-0.6), so it is one candidate among the grid;
- ``gain`` from :data:`GAINS`.

The arithmetic is the engine's (a document is admitted when it stores one of the query's
labels; a query with no label, or whose screen admits fewer than ``size``, is unscreened).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from isr.errors import InvalidInput
from isr.plugin.keyword_rule import select_labels

__all__ = ["GAINS", "SCALES", "Calibration", "calibrate", "measure_scale", "screen_at"]

GAINS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5)
SCALES = (0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
_RULE_KEYS = ("r_t", "rule", "alpha", "p_min", "mass", "stop", "miss", "gain", "scale")


@dataclass(frozen=True)
class Calibration:
    scale: float
    gain: float
    kept: float  # at (scale, gain) on the labelled split
    admitted: float
    met: bool  # a swept point kept >= the target (else the most-kept one is returned)
    measured: float  # the s / p statistic of measure_scale
    points: list[dict[str, float]] = field(default_factory=list)  # every swept gain

    def defaults(self) -> dict[str, float]:
        """The keyword options to record in the index (its other defaults are kept)."""
        return {"scale": round(self.scale, 4), "gain": self.gain}


def _check(q_probs: np.ndarray, g_rank: np.ndarray, rel: Sequence[np.ndarray]) -> None:
    if q_probs.ndim != 2 or g_rank.ndim != 2 or q_probs.shape[1] != g_rank.shape[1]:
        raise InvalidInput(
            f"calibration: query probabilities {q_probs.shape} and gallery ranks "
            f"{g_rank.shape} must be (Q, L) and (G, L) over one vocabulary"
        )
    if len(rel) != len(q_probs) or any(len(r) == 0 for r in rel):
        raise InvalidInput("calibration: every query needs at least one relevant gallery item")


def measure_scale(
    q_probs: np.ndarray, g_rank: np.ndarray, rel: Sequence[np.ndarray], r_i: int, k: int = 3
) -> float:
    """sum s / sum p over each query's top-k labels (s: share of its relevant documents
    storing the label at R_I = r_i), clipped to (0, 1] as the option allows."""
    _check(q_probs, g_rank, rel)
    top = np.argsort(-q_probs, axis=1)[:, :k]  # (Q, k)
    p = np.take_along_axis(q_probs, top, 1)
    s = np.stack([(g_rank[r][:, top[t]] < r_i).mean(0) for t, r in enumerate(rel)])  # (Q, k)
    return float(min(1.0, max(1e-3, s.sum() / max(p.sum(), 1e-9))))


def screen_at(
    q_probs: np.ndarray,
    g_rank: np.ndarray,
    rel: Sequence[np.ndarray],
    r_i: int,
    options: Mapping[str, Any],
    size: int = 10,
    top: int = 15,
) -> tuple[float, float]:
    """(kept, admitted) of the screen with ``options`` (select_labels' keys; ``rule`` "top"
    = alpha 0): mean share of each query's relevant documents admitted, mean share admitted."""
    g = g_rank < r_i  # (G, L) stored labels
    share = g.mean(0)
    names = [str(j) for j in range(g.shape[1])]
    shares = {w: float(share[j]) for j, w in enumerate(names)}
    kw = {k: v for k, v in options.items() if k in _RULE_KEYS and k not in ("rule", "r_t")}
    if options.get("rule", "top") == "top":
        kw["alpha"] = 0.0
    order = np.argsort(-q_probs, axis=1)[:, :top]
    kept, adm = [], []
    for t, r in enumerate(rel):
        js = order[t]
        sel = select_labels([names[j] for j in js], [float(q_probs[t, j]) for j in js],
                            int(options.get("r_t", 3)), shares=shares, **kw)  # fmt: skip
        a = np.asarray(g[:, [int(w) for w in sel]].any(1) if sel else np.ones(len(g), bool))
        if a.sum() < min(size, len(g)):
            a[:] = True  # relaxed, as the engine
        kept.append(a[r].mean())
        adm.append(a.mean())
    return float(np.mean(kept)), float(np.mean(adm))


def calibrate(
    q_probs: np.ndarray,
    g_rank: np.ndarray,
    rel: Sequence[np.ndarray],
    r_i: int,
    options: Mapping[str, Any],
    kept: float = 0.994,
    gains: Sequence[float] = GAINS,
    scales: Sequence[float] = SCALES,
    size: int = 10,
) -> Calibration:
    """The (scale, gain) admitting least while keeping >= ``kept`` (see module doc).

    q_probs (Q, L): each labelled query's head probabilities; g_rank (G, L): each gallery
    document's rank of every label (stored when < r_i); rel[t]: gallery rows relevant to query
    t; options: the index's other keyword defaults (rule, alpha, r_t, ...). The measured
    scale (:func:`measure_scale`) is swept beside ``scales``."""
    if not 0 < kept <= 1:
        raise InvalidInput(f"calibration: kept target must be in (0, 1], got {kept}")
    if not gains or any(g <= 0 for g in gains):
        raise InvalidInput(f"calibration: gains must be positive, got {list(gains)}")
    if any(not 0 < c <= 1 for c in scales):
        raise InvalidInput(f"calibration: scales must be in (0, 1], got {list(scales)}")
    measured = measure_scale(q_probs, g_rank, rel, r_i)
    points = []
    for sc in sorted({round(measured, 4), *scales}):
        for gn in sorted(gains):
            k, a = screen_at(q_probs, g_rank, rel, r_i, {**options, "scale": sc, "gain": gn}, size)
            points.append({"scale": float(sc), "gain": float(gn), "kept": k, "admitted": a})
    ok = [p for p in points if p["kept"] >= kept]
    best = min(ok, key=lambda p: p["admitted"]) if ok else max(points, key=lambda p: p["kept"])
    return Calibration(best["scale"], best["gain"], best["kept"], best["admitted"], bool(ok),
                       measured, points)  # fmt: skip
