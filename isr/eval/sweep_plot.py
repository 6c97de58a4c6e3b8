"""The R_I x R_T sweep as a picture: R@1 and ground truth kept against the speed-up over
exhaustive max-sim, one line per R_I, each point labelled with its R_T (the paper's Table V).

Entry point: :func:`plot_sweep(report, path, prov) -> path` (matplotlib, Agg backend, PNG).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isr.eval.trec_style import TrecStyleReport

__all__ = ["plot_sweep"]

TITLES = {"t2i": "text -> image", "i2t": "image -> text"}


def plot_sweep(report: TrecStyleReport, path: Path, prov: dict[str, Any]) -> Path:
    import matplotlib  # noqa: PLC0415  (slow import, only when plotting)

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cfg = report.config
    dirs = [d for d in cfg.sweep_directions if any(r.direction == d and r.sweep
                                                   for r in report.results)]  # fmt: skip
    fig, axes = plt.subplots(len(dirs), 2, figsize=(11, 4.4 * len(dirs)), squeeze=False)
    for row, d in zip(axes, dirs):
        sweep = [r for r in report.results if r.direction == d and r.sweep]
        ref = report.result(d, "exhaustive")
        for ax, what, label in (
            (row[0], "R@1", "R@1 (%)"),
            (row[1], "kept", "ground truth kept by the screen (%)"),
        ):
            for r_i in sorted({r.r_i for r in sweep}):
                pts = sorted((r for r in sweep if r.r_i == r_i), key=lambda r: r.r_t or 0)
                xs = [r.speedup or 0.0 for r in pts]
                ys = [
                    r.metrics["R@1"] if what == "R@1" else 100.0 * (r.gt_kept or 0.0) for r in pts
                ]
                ax.plot(xs, ys, marker="o", label=f"R_I = {r_i}")
                for r, x, y in zip(pts, xs, ys):
                    ax.annotate(f"R_T={r.r_t}", (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)  # fmt: skip
            if what == "R@1" and ref is not None:
                ax.axhline(ref.metrics["R@1"], color="grey", ls="--", lw=1,
                           label="exhaustive max-sim")  # fmt: skip
            if what == "kept":
                ax.axhline(99.0, color="grey", ls=":", lw=1, label="99% target")
            ax.set_xlabel("speed-up over exhaustive max-sim (x, CPU time per query)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_title(f"{TITLES[d]}, {cfg.sweep_config}", fontsize=10)
    commit = prov["git"].get("commit") or "no git"
    fig.suptitle(
        f"{cfg.title or 'R_I x R_T sweep'} - bundle {report.bundle_fingerprint[:12]}, "
        f"git {str(commit)[:10]}, {prov['date'][:10]}",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
