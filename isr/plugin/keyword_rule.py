"""Which of a query's keyword labels screen the gallery: by rank (the paper) or by cost.

Entry point: :func:`select_labels`. A query carries ranked labels with probabilities; the
paper keeps the top R_T. The cost rule weighs each label's evidence against what it costs:
a label attached to a share s of the gallery admits about s of it, so a label scores
log p - alpha * log s and a rare likely label beats a frequent one at equal evidence
(alpha = 0 is the paper's rank order). Labels below ``p_min`` are left out (a probability
threshold), selection stops once the kept labels hold ``mass`` of the query's probability, or
once the chance that none of them is right, prod(1 - p), is at most ``miss`` (so a query sure of
one label uses one, an unsure one uses several: the number of labels follows the evidence), and
labels attached to more than ``stop`` of the gallery (stop labels) are never used: they cost
nearly a full scan and screen nothing.

``gain`` is the same trade made across queries rather than per query: a further label is taken
only while what it adds to the chance of keeping the query's image, prod(1 - p) over the labels
already kept times its own p, per share of the gallery it admits, is at least ``gain``. One
exchange rate between kept and admitted for every query is what maximises the kept share at a
given admitted share (a Lagrangian argument, labels read as independent and their admitted
shares as adding up), where a fixed ``miss`` spends as much on a query whose next label is
expensive as on one whose next label is nearly free.

``scale`` multiplies the query's probabilities before the threshold and the stops read them: a
head's p is the chance that the query's item has the label, the stops want the chance that a
matching gallery document stores it. For an image query against captions those differ by the
share of an image's captions naming a label it has (~0.67 on world10k, measured on dev): with
scale 1 the confident image head stops after one or two labels and keeps 85% of the relevant
captions; at 0.67 it keeps 99.5% (BENCHMARKS.md, issue 12 session 3). The share belongs to the
gallery: ``isr index calibrate-screen`` measures an index's scale and gain on a labelled split.

The option names and their checks (:data:`KEYWORD_FIELDS`, :func:`check_keyword_options`) live
here too, so that a query's options (``KeywordOptions``) and an index's recorded defaults
(``IndexConfig.keywords``) are checked by one rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from isr.errors import InvalidInput
from isr.plugin.backend import MODES

__all__ = ["KEYWORD_FIELDS", "RULES", "TEXT_MODES", "check_keyword_options", "select_labels"]

TEXT_MODES = ("pred", "ext", "merge")
RULES = ("top", "cost")
# Every keyword option a query (or an index's defaults) may name, in KeywordOptions' order.
KEYWORD_FIELDS = (
    "r_t", "mode", "minimum_should_match", "text", "rule", "alpha", "p_min", "mass", "stop", "r_i",
    "miss", "gain", "scale",
)  # fmt: skip
_INTS = {"r_t": (1, 100), "minimum_should_match": (1, 100), "r_i": (1, 10_000)}
_NUMBERS = {
    "alpha": (0.0, 10.0), "p_min": (0.0, 1.0), "mass": (0.0, 1.0), "stop": (0.0, 1.0),
    "miss": (0.0, 1.0), "gain": (0.0, 1000.0), "scale": (0.0, 1.0),
}  # fmt: skip
_CHOICES = {"mode": MODES, "text": TEXT_MODES, "rule": RULES}


def check_keyword_options(values: Mapping[str, Any], where: str = "keywords") -> None:
    """Raise InvalidInput naming the first unknown key or bad value of ``values`` (a subset of
    :data:`KEYWORD_FIELDS`; ``r_i`` may be None: all the index stores). Cross-field rules
    (minimum_should_match <= r_t) are the caller's: a partial set cannot check them."""
    bad = sorted(set(values) - set(KEYWORD_FIELDS))
    if bad:
        raise InvalidInput(
            f"{where}: unsupported key(s) {bad}; supported: {', '.join(KEYWORD_FIELDS)}"
        )
    for name, v in values.items():
        if name in _INTS:
            if name == "r_i" and v is None:
                continue
            lo, hi = _INTS[name]
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidInput(f"{where}.{name} must be an integer, got {v!r}")
            if not lo <= v <= hi:
                raise InvalidInput(f"{where}.{name} must be in [{lo}, {hi}], got {v}")
        elif name in _NUMBERS:
            flo, fhi = _NUMBERS[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not flo <= v <= fhi:
                raise InvalidInput(f"{where}.{name} must be a number in [{flo}, {fhi}], got {v!r}")
            if name in ("mass", "scale") and v <= 0:
                raise InvalidInput(f"{where}.{name} must be > 0, got {v!r}")
        elif not isinstance(v, str) or v not in _CHOICES[name]:
            raise InvalidInput(f"{where}.{name} {v!r} is not one of {_CHOICES[name]}")


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
    miss: float = 0.0,
    gain: float = 0.0,
    scale: float = 1.0,
) -> tuple[str, ...]:
    """At most ``r_t`` of ``labels`` (best first by the rule). ``shares[label]``: the share of
    the gallery carrying it (absent: 0, it admits nothing); needed when alpha > 0 or stop < 1.
    miss > 0: stop once prod(1 - p) over the kept labels is <= miss (the labels' probabilities
    read as independent chances that the query's image stores them). gain > 0: a label after
    the first is taken only while prod(1 - p) over the kept labels x its p / its share is
    >= gain (needs ``shares``), and selection ends at the first that is not. scale: every p is
    read as scale * p (the ranks, and so the top rule, do not change)."""
    if scale != 1.0:
        probs = [scale * p for p in probs]
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
    held, none_right = 0.0, 1.0
    for _, _, w, p in cand[:r_t]:
        if gain and out:
            s = 0.0 if shares is None else float(shares.get(w, 0.0))
            if none_right * min(max(p, 0.0), 1.0) < gain * max(s, eps):
                break
        out.append(w)
        held += max(p, 0.0)
        none_right *= 1.0 - min(max(p, 0.0), 1.0)
        if held / total >= mass or none_right <= miss:
            break
    return tuple(out)
