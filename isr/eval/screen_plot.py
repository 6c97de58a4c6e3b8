"""Plot and tabulate kept vs admitted of :mod:`isr.eval.screen_curve` results.

Run: ``python -m isr.eval.screen_plot OUT.png NAME=curve.json ...``: for each result, the
lower-right frontier of the paper's rule (predicted text labels, top R_T, any R_I) and of every
rule swept (text modes, cost rule, the miss stop); prints a markdown table (OUT.md beside the
plot) of the least admitted share at given kept shares, the paper's rule and ours side by side.
``NAME=test.json,dev.json`` also reports each rule's setting picked on the dev curve (least
admitted at the kept level there) and measured on the test curve: tuned on one split, reported
on another, where the least-admitted columns are chosen on the test split itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "KEPT_LEVELS", "frontier", "is_paper_rule", "least_admitted", "picked", "plot", "table",
]  # fmt: skip
SETTING = ("mode", "r_i", "alpha", "r_t", "miss", "gain")

KEPT_LEVELS = (0.994, 0.99, 0.95)


def frontier(points: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (less admitted and more kept)."""
    pts = sorted((p["admitted"], p["kept"]) for p in points)
    out: list[tuple[float, float]] = []
    for a, k in pts:
        if not out or k > out[-1][1]:
            out.append((a, k))
    return out


def is_paper_rule(p: dict[str, Any]) -> bool:
    """Cao et al.'s screen: the text head's labels, the top R_T, no cost, no miss stop."""
    return (
        p["mode"] == "pred" and p["alpha"] == 0 and p.get("miss", 0.0) == 0
        and p.get("gain", 0.0) == 0
    )  # fmt: skip


def least_admitted(points: list[dict[str, Any]], kept: float) -> dict[str, Any] | None:
    ok = [p for p in points if p["kept"] >= kept]
    return min(ok, key=lambda p: (p["admitted"], -p["kept"])) if ok else None


def picked(
    dev: list[dict[str, Any]], test: list[dict[str, Any]], kept: float
) -> dict[str, Any] | None:
    """The test point of the setting that admits least at >= ``kept`` on the dev points."""
    b = least_admitted(dev, kept)
    if b is None:
        return None
    key = tuple(b.get(f, 0.0) for f in SETTING)
    same = [p for p in test if tuple(p.get(f, 0.0) for f in SETTING) == key]
    return same[0] if same else None


def _rule(p: dict[str, Any]) -> str:
    r = f"{p['mode']}, " + ("top" if p["alpha"] == 0 else f"cost a={p['alpha']:g}")
    if p.get("miss"):
        r += f", miss {p['miss']:g}"
    if p.get("gain"):
        r += f", gain {p['gain']:g}"
    upto = "<= " if p.get("miss") or p.get("gain") else ""
    return f"{r}, R_I {p['r_i']}, R_T {upto}{p['r_t']}"


def _cell(b: dict[str, Any] | None) -> str:
    if b is None:
        return "not reached"
    return f"**{100 * b['admitted']:.1f}%** (kept {100 * b['kept']:.1f}; {_rule(b)})"


def table(curves: dict[str, dict[str, Any]], dev: dict[str, dict[str, Any]] | None = None) -> str:
    """Least admitted at each of KEPT_LEVELS: paper's rule vs every rule, per result; with a
    dev curve for a result, also each rule's dev-picked setting measured on the test curve."""
    dev = dev or {}
    head = "| benchmark | mAP image / text | kept | paper's rule: admitted (setting) | ours: admitted (setting) |"
    sep = "|---|--:|--:|---|---|"
    if dev:
        head += " paper's rule, picked on dev: test kept / admitted | ours, picked on dev |"
        sep += "---|---|"
    rows = [head, sep]
    for name, res in curves.items():
        pts = res["points"]
        m = res.get("map", {})
        maps = f"{100 * m['image']:.1f} / {100 * m['text']:.1f}" if m else "-"
        for k in KEPT_LEVELS:
            sels = ([p for p in pts if is_paper_rule(p)], pts)
            cells = [_cell(least_admitted(sel, k)) for sel in sels]
            if dev:
                d = dev.get(name, {}).get("points")
                for paper in (True, False):
                    t = None
                    if d is not None:
                        dd = [p for p in d if is_paper_rule(p)] if paper else d
                        t = picked(dd, sels[0] if paper else pts, k)
                    cells.append(
                        "-" if t is None
                        else f"{100 * t['kept']:.1f} / **{100 * t['admitted']:.1f}%** ({_rule(t)})"
                    )  # fmt: skip
            rows.append(f"| {name} | {maps} | >= {100 * k:g}% | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot(out: Path, curves: dict[str, dict[str, Any]]) -> None:
    import matplotlib  # noqa: PLC0415  (slow import, only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 5))
    for ci, (name, res) in enumerate(curves.items()):
        pts = res["points"]
        for sel, ls, rule in (([p for p in pts if is_paper_rule(p)], "--", "paper's rule (pred, top R_T)"),
                              (pts, "-", "ours (any rule swept)")):  # fmt: skip
            f = frontier(sel)
            ax.plot([100 * a for a, _ in f], [100 * k for _, k in f], marker=".", color=f"C{ci}",
                    ls=ls, label=f"{name}: {rule}")  # fmt: skip
    ax.axhline(99.4, color="k", lw=0.6, ls=":", label="99.4% kept (paper's R_I 15 / R_T 3)")
    ax.plot([0, 100], [0, 100], color="grey", lw=0.8, label="random filter (lift 1)")
    ax.set_xlabel("gallery admitted %")
    ax.set_ylabel("ground truth kept %")
    ax.set_ylim(80, 100.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    cs, dv = {}, {}
    for a in sys.argv[2:]:
        name, files = a.split("=", 1)
        test_file, _, dev_file = files.partition(",")
        cs[name] = json.loads(Path(test_file).read_text())
        if dev_file:
            dv[name] = json.loads(Path(dev_file).read_text())
    plot(Path(sys.argv[1]), cs)
    t = table(cs, dv)
    Path(sys.argv[1]).with_suffix(".md").write_text(t)
    print(t)
