"""Plot kept vs admitted of :mod:`isr.eval.screen_curve` results (one line per rule).

Run: ``python -m isr.eval.screen_plot OUT.png NAME=curve.json ...``. For each result and each
(text mode, alpha) rule, the lower-right frontier of its (admitted, kept) points over R_I x R_T.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["frontier", "plot"]


def frontier(points: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (less admitted and more kept)."""
    pts = sorted((p["admitted"], p["kept"]) for p in points)
    out: list[tuple[float, float]] = []
    for a, k in pts:
        if not out or k > out[-1][1]:
            out.append((a, k))
    return out


def plot(out: Path, curves: dict[str, dict[str, Any]]) -> None:
    import matplotlib  # noqa: PLC0415  (slow import, only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {("pred", 0.0): "-", ("merge", 0.0): "--", ("pred", 0.5): "-.", ("merge", 0.5): ":"}
    for ci, (name, res) in enumerate(curves.items()):
        pts = res["points"]
        color = f"C{ci}"
        for mode, alpha in (("pred", 0.0), ("merge", 0.0), ("pred", 0.5), ("merge", 0.5)):
            sel = [p for p in pts if p["mode"] == mode and p["alpha"] == alpha]
            if not sel:
                continue
            f = frontier(sel)
            rule = "top R_T (paper)" if alpha == 0 else f"cost a={alpha}"
            ax.plot([100 * a for a, _ in f], [100 * k for _, k in f], marker=".", color=color,
                    ls=styles[(mode, alpha)], label=f"{name}: {mode}, {rule}")  # fmt: skip
    ax.plot([0, 100], [0, 100], color="grey", lw=0.8, label="random filter (lift 1)")
    ax.set_xlabel("gallery admitted %")
    ax.set_ylabel("ground truth kept %")
    ax.set_ylim(80, 100.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    plot(Path(sys.argv[1]), {a.split("=")[0]: json.loads(Path(a.split("=")[1]).read_text())
                             for a in sys.argv[2:]})  # fmt: skip
