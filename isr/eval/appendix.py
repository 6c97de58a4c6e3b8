"""The appendix sweeps of Inflate and Shrink at small scale, at matched total epochs.

Entry points: :func:`appendix_plan` (row -> stages), :func:`train_appendix` (train the rows,
resumable) and :func:`evaluate_appendix` (test-split recall of every finished row, the JSON
and the Markdown tables). ``isr eval appendix`` parses arguments and calls them.

Every row trains ``T`` epochs in all, like :mod:`isr.eval.table2`'s matched rows, in the same
run directory (its shared tokenizer, and its finished stages where a row is one of Table 2's):

- **Table 1** (codes): I with k = 8, 16, 32 codes, T epochs (k = 32 is Table 2's I; k = 0, no
  codes, is B w/o).
- **Table 6** (fragments, neither inflate nor shrink): B w/o keeping the first n = 1, 2, 4, 8,
  16, 32 fragments per side (``max_frags``), T epochs (n = 32 is Table 2's B w/o).
- **Table 7** (B -> students): B w/o for T // 2 epochs (Table 2's B->F teacher), then a base
  student with n fragments per side (n^2 interactions at most) distilled from it for the rest.

Stage directories: ``matched/...`` for Table 2's, ``appendix/<chain>.<setting>`` otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isr.encoders.checkpoint import METRICS_FILE
from isr.encoders.config import write_json
from isr.encoders.train import PairedData, TrainConfig
from isr.encoders.vocabulary import KeywordVocab
from isr.errors import InvalidInput
from isr.eval.encoder_eval import evaluate_stage
from isr.eval.report import markdown_table
from isr.eval.table2 import _shared_tokenizer, train_row

__all__ = [
    "FRAGMENTS",
    "PAPER_ENDPOINTS",
    "TABLES",
    "Step",
    "appendix_plan",
    "evaluate_appendix",
    "format_appendix",
    "plot_interactions",
    "train_appendix",
]

TABLES: tuple[str, ...] = ("table6", "table7", "table1")  # the order they train in (cheap first)
CODES: tuple[int, ...] = (8, 16, 32)
FRAGMENTS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Step:
    """One stage of a row: the stage name, its epochs, the TrainConfig fields it overrides
    and its directory relative to the run directory."""

    stage: str
    epochs: int
    fields: tuple[tuple[str, int], ...]
    dir: str


def appendix_plan(total: int, cfg: TrainConfig) -> dict[str, dict[str, list[Step]]]:
    """Table -> row name -> its stages (the last is the row's model); every row sums to
    ``total`` epochs. Rows equal to a Table 2 row (``cfg``'s codes / max_frags) reuse its
    directory."""
    if total < 2:
        raise InvalidInput(f"total_epochs must be >= 2 (teacher and student), got {total}")
    half = total // 2
    out: dict[str, dict[str, list[Step]]] = {"table1": {}, "table6": {}, "table7": {}}
    for k in CODES:
        d = f"matched/inflate{total}" if k == cfg.codes else f"appendix/inflate{total}.k{k}"
        out["table1"][f"I k={k}"] = [Step("inflate", total, (("codes", k),), d)]
    teacher = Step("base", half, (), f"matched/base{half}")
    for n in FRAGMENTS:
        d = f"matched/base{total}" if n == cfg.max_frags else f"appendix/base{total}.f{n}"
        out["table6"][f"B n={n}"] = [Step("base", total, (("max_frags", n),), d)]
        sd = f"appendix/base{half}.shrink-base{total - half}.f{n}"
        out["table7"][f"B->B n={n}"] = [
            teacher,
            Step("shrink-base", total - half, (("max_frags", n),), sd),
        ]
    return out


def train_appendix(
    total: int,
    cfg: TrainConfig,
    train: PairedData,
    val: PairedData,
    vocab: KeywordVocab,
    run_dir: Path,
    command: str,
    tables: Sequence[str] = TABLES,
) -> None:
    """Train the rows of ``tables`` (in :data:`TABLES` order) under ``run_dir``; finished
    stages are skipped; each stage trained appends a line to ``appendix_progress.jsonl``."""
    bad = [t for t in tables if t not in TABLES]
    if bad:
        raise InvalidInput(f"unknown tables {bad}: expected some of {list(TABLES)}")
    tok_dir = _shared_tokenizer(cfg, train, run_dir)
    plan = appendix_plan(total, cfg)
    kw: dict[str, Any] = {"vocab": vocab, "val": val, "command": command}
    for table in (t for t in TABLES if t in tables):
        for name, steps in plan[table].items():
            rows = [
                (st.stage,
                 TrainConfig.from_dict({**cfg.to_dict(), **dict(st.fields), "epochs": st.epochs}),
                 run_dir / st.dir)
                for st in steps
            ]  # fmt: skip
            progress = run_dir / "appendix_progress.jsonl"
            train_row(rows, train, tok_dir, kw, progress, {"table": table, "row": name})


def evaluate_appendix(
    total: int, cfg: TrainConfig, test: PairedData, run_dir: Path
) -> dict[str, Any]:
    """Test-split recall of every finished row (rows not trained are listed as missing);
    writes ``appendix.json`` and returns its content."""
    plan = appendix_plan(total, cfg)
    res: dict[str, Any] = {"total_epochs": total, "tables": {}, "missing": []}
    for table, rows in plan.items():
        got: dict[str, Any] = {}
        for name, steps in rows.items():
            d = run_dir / steps[-1].dir
            if not (d / METRICS_FILE).exists():
                res["missing"].append(f"{table}: {name}")
                continue
            setting = dict(steps[-1].fields)
            got[name] = {"dir": steps[-1].dir, **setting, **evaluate_stage(d, test)}
        res["tables"][table] = got
    write_json(run_dir / "appendix.json", res)
    return res


def format_appendix(res: dict[str, Any]) -> str:
    """One Markdown table per appendix table (R@K in %)."""
    keys = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "rsum")
    heads = ["model", "T->I R@1", "R@5", "R@10", "I->T R@1", "R@5", "R@10", "rsum"]
    parts = []
    for table, rows in res["tables"].items():
        body = [[name, *(r[k] for k in keys)] for name, r in rows.items()]
        parts.append(f"{table}\n\n" + markdown_table(heads, body, digits=1))
    if res["missing"]:
        parts.append("not trained: " + ", ".join(res["missing"]))
    return "\n\n".join(parts)


# The paper's figures on Flickr30K (T->I R@1) that bound the curve of Table 7, from the project's
# DESIGN.md anchors: one interaction (B->F, F distilled from B) and 32^2 (B, trained alone).
# Its intermediate points are not in the project's reference material, so none is drawn.
PAPER_ENDPOINTS: tuple[tuple[int, float], ...] = ((1, 58.2), (32 * 32, 60.6))


def plot_interactions(res: dict[str, Any], path: Path) -> Path:
    """T->I R@1 against interactions per pair (n^2, log scale) for Table 6 (B alone) and
    Table 7 (students of B), each as a share of its own 32^2 row, beside the paper's two
    endpoints as the same share; a second panel gives our absolute R@1. Returns ``path``."""
    import matplotlib  # noqa: PLC0415  (slow import, only when plotting)

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax, ab) = plt.subplots(1, 2, figsize=(10, 4))
    for table, label, mark in (("table6", "B alone (Table 6)", "o-"),
                               ("table7", "B -> student (Table 7)", "s-")):  # fmt: skip
        rows = [r for r in res["tables"].get(table, {}).values() if "max_frags" in r]
        if not rows:
            continue
        rows.sort(key=lambda r: r["max_frags"])
        x = [r["max_frags"] ** 2 for r in rows]
        y = [r["t2i_r1"] for r in rows]
        top = next((r["t2i_r1"] for r in rows if r["max_frags"] == FRAGMENTS[-1]), None)
        if top:
            ax.plot(x, [v / top for v in y], mark, label=f"ours: {label}")
        ab.plot(x, y, mark, label=f"ours: {label}")
    px, py = zip(*PAPER_ENDPOINTS, strict=True)
    ax.plot(px, [v / py[-1] for v in py], "k--", marker="x",
            label="paper, Flickr30K (endpoints only)")  # fmt: skip
    for a, yl in ((ax, "T->I R@1 / R@1 at 32^2"), (ab, "T->I R@1 (%)")):
        a.set_xscale("log", base=2)
        a.set_xlabel("interactions per pair (n^2 fragments)")
        a.set_ylabel(yl)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    ax.set_title("shape (each curve / its 32^2 point)")
    ab.set_title("synthetic world, test split")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
