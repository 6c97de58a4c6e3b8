"""Which of a query's keyword labels screen the gallery: by rank (the paper) or by cost.

Entry point: :func:`select_labels`. A query carries ranked labels with probabilities; the
paper keeps the top R_T. The cost rule weighs each label's evidence against what it costs:
a label attached to a share s of the gallery admits about s of it, so a label scores
log p - alpha * log s and a rare likely label beats a frequent one at equal evidence
(alpha = 0 is the paper's rank order). Labels below ``p_min`` are left out (a probability
threshold), selection stops once the kept labels hold ``mass`` of the query's probability, and
labels attached to more than ``stop`` of the gallery (stop labels) are never used: they cost
nearly a full scan and screen nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["select_labels"]


def select_labels(
    labels: Sequence[str],
    probs: Sequence[float],
    r_t: int,
    *,
    shares: Mapping[str, float] | None = None,
    alpha: float = 0.0,
    p_min: float = 0.0,
    mass: float = 1.0,
    stop: float = 1.0,
) -> tuple[str, ...]:
    """At most ``r_t`` of ``labels`` (best first by the rule). ``shares[label]``: the share of
    the gallery carrying it (absent: 0, it admits nothing); needed when alpha > 0 or stop < 1."""
    eps = 1e-6
    cand = []
    for pos, (w, p) in enumerate(zip(labels, probs, strict=True)):
        if p < p_min:
            continue
        s = 0.0 if shares is None else float(shares.get(w, 0.0))
        if s > stop:
            continue
        score = math.log(max(p, eps)) - alpha * math.log(max(s, eps)) if alpha else -pos
        cand.append((score, -pos, w, p))
    cand.sort(reverse=True)
    total = sum(max(p, 0.0) for p in probs) or 1.0
    out: list[str] = []
    held = 0.0
    for _, _, w, p in cand[:r_t]:
        out.append(w)
        held += max(p, 0.0)
        if held / total >= mass:
            break
    return tuple(out)
