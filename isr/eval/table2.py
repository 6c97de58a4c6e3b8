"""Table 2 of Inflate and Shrink on a precomp dataset (the synthetic world by default).

Entry point: :func:`run_table2` (train the six rows, resumable, then evaluate each on the test
split); ``isr eval table2`` (``python eval/table2.py``) only parses arguments and calls it. It prints the Markdown
tables and writes ``table2.json`` into the run directory.

Rows and where they live under ``run_dir``:

- ``paper/``  the default recipe (:func:`isr.encoders.train.run_recipe` "paper"):
  ``inflate`` (I), ``shrink-base`` (I->B), ``shrink-fast`` (I->B->F), ``bundle``;
- ``plain/``  ``fast`` (F w/o), ``base`` (B w/o), ``shrink-fast`` (B->F, teacher B w/o).

With ``total_epochs`` = T (``--total-epochs``) the rows are trained at **matched total
epochs** instead (:func:`matched_rows`): a distilled row counts its teachers' epochs, so I,
B w/o and F w/o train T epochs, B->F and I->B split T into two stages (T//2 + the rest),
I->B->F into three (T//3, T//3, the rest). Stages live in ``run_dir/matched/`` named by their
chain (``inflate3.shrink-base3``); a shared prefix is trained once.

Every stage uses the same TrainConfig (size, epochs, optimiser) and the same tokenizer
(``paper/tokenizer``, trained once on the training captions), so rows differ only by model
type and teacher. ``chains`` selects which chains to train in this process: two processes,
one per chain, train in parallel; finished stages are skipped, so a last call with both
chains only evaluates. Scoring is the encoders' own (:mod:`isr.encoders.scoring`): max-sim over
fragments for B and I, the first-token cosine for F.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isr.encoders.bundle import write_bundle
from isr.encoders.checkpoint import METRICS_FILE, TOKENIZER_DIR
from isr.encoders.config import read_json, write_json
from isr.encoders.tokenizer import load_tokenizer, train_tokenizer
from isr.encoders.train import PairedData, TrainConfig, run_recipe, train_stage
from isr.encoders.vocabulary import KeywordVocab
from isr.errors import InvalidInput
from isr.eval.caption_images import INFO_FILE, SPLITS, paired_split, training_splits
from isr.eval.encoder_eval import evaluate_stage, keyword_report, throughput
from isr.eval.report import markdown_table
from isr.ingest.training_data import load_paired

__all__ = [
    "CAPTION_ORDER",
    "CHAINS",
    "ROWS",
    "Table2Result",
    "matched_rows",
    "run_caption_table2",
    "run_table2",
    "train_chain",
]

CHAINS: tuple[str, ...] = ("paper", "plain")
# Row name -> stage directory relative to the run directory (the paper's Table 2 order).
ROWS: dict[str, str] = {
    "F w/o": "plain/fast",
    "B w/o": "plain/base",
    "I": "paper/inflate",
    "B->F": "plain/shrink-fast",
    "I->B": "paper/shrink-base",
    "I->B->F": "paper/shrink-fast",
}


# Row name -> its chain of stages (the last one is the row's model).
_CHAIN_OF: dict[str, tuple[str, ...]] = {
    "F w/o": ("fast",),
    "B w/o": ("base",),
    "I": ("inflate",),
    "B->F": ("base", "shrink-fast"),
    "I->B": ("inflate", "shrink-base"),
    "I->B->F": ("inflate", "shrink-base", "shrink-fast"),
}


def matched_rows(total: int) -> dict[str, list[tuple[str, int]]]:
    """Row name -> [(stage, epochs), ...] whose epochs sum to ``total`` for every row."""
    if total < 3:
        raise InvalidInput(f"total_epochs must be >= 3 (three stages of I->B->F), got {total}")
    out: dict[str, list[tuple[str, int]]] = {}
    for name, chain in _CHAIN_OF.items():
        k = len(chain)
        ep = [total // k] * (k - 1)
        ep.append(total - sum(ep))
        out[name] = list(zip(chain, ep, strict=True))
    return out


def _matched_dir(plan: Sequence[tuple[str, int]]) -> str:
    return "matched/" + ".".join(f"{st}{e}" for st, e in plan)


def train_matched(
    total: int,
    cfg: TrainConfig,
    train: PairedData,
    val: PairedData,
    vocab: KeywordVocab,
    run_dir: Path,
    command: str,
    rows: Sequence[str] | None = None,
) -> dict[str, str]:
    """Train the rows of :func:`matched_rows` (``rows``: a subset) under ``run_dir``; returns
    row name -> stage directory relative to ``run_dir``. Finished stages are skipped."""
    tok_dir = _shared_tokenizer(cfg, train, run_dir)
    plans = matched_rows(total)
    kw: dict[str, Any] = {"vocab": vocab, "val": val, "command": command}
    dirs: dict[str, str] = {}
    for name, plan in plans.items():
        dirs[name] = _matched_dir(plan)
        if rows is not None and name not in rows:
            continue
        steps = [
            (stage, TrainConfig.from_dict({**cfg.to_dict(), "epochs": epochs}),
             run_dir / _matched_dir(plan[: i + 1]))
            for i, (stage, epochs) in enumerate(plan)
        ]  # fmt: skip
        train_row(steps, train, tok_dir, kw, run_dir / "progress.jsonl", {"row": name})
    return dirs


def train_row(
    steps: Sequence[tuple[str, TrainConfig, Path]],
    train: PairedData,
    tok_dir: Path,
    kw: Mapping[str, Any],
    progress: Path,
    row: Mapping[str, Any],
) -> None:
    """Train one row's stages (stage, config, directory) in order, each the teacher of the
    next; a finished stage is skipped (train_stage returns its directory). Every stage trained
    here appends ``{**row, "dir", "seconds"}`` to ``progress``. Used by Table 2 and the
    appendix."""
    teacher: Path | None = None
    for stage, c, d in steps:
        t0 = time.perf_counter()
        done = (d / METRICS_FILE).exists()
        if teacher is None:
            teacher = train_stage(stage, c, train, d, tokenizer_dir=tok_dir, **kw)
        else:
            teacher = train_stage(stage, c, train, d, teacher_dir=teacher, **kw)
        if not done:
            with progress.open("a", encoding="utf-8") as f:
                line = {**row, "dir": str(d), "seconds": round(time.perf_counter() - t0, 1)}
                f.write(json.dumps(line) + "\n")


@dataclass(frozen=True)
class Table2Result:
    """Recall rows (name -> recall_at_k keys), keyword and throughput reports, the JSON path."""

    recall: dict[str, dict[str, float]]
    keywords: dict[str, Any]
    speed: dict[str, Any]
    stage_seconds: dict[str, float]
    json_path: Path


def train_chain(
    chain: str,
    cfg: TrainConfig,
    train: PairedData,
    val: PairedData,
    vocab: KeywordVocab,
    run_dir: Path,
    command: str,
) -> None:
    """Train one chain ("paper" or "plain") under ``run_dir``; finished stages are skipped."""
    if chain not in CHAINS:
        raise InvalidInput(f"chain {chain!r} is not one of {CHAINS}")
    tok_dir = _shared_tokenizer(cfg, train, run_dir)
    t0 = time.perf_counter()
    if chain == "paper":
        run_recipe("paper", cfg, train, run_dir / "paper", vocab=vocab, val=val, command=command)
    else:
        kw: dict[str, Any] = {"vocab": vocab, "val": val, "command": command}
        plain = run_dir / "plain"
        train_stage("fast", cfg, train, plain / "fast", tokenizer_dir=tok_dir, **kw)
        base = train_stage("base", cfg, train, plain / "base", tokenizer_dir=tok_dir, **kw)
        train_stage("shrink-fast", cfg, train, plain / "shrink-fast", teacher_dir=base, **kw)
    log = run_dir / f"wall_{chain}.jsonl"
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"chain": chain, "seconds": round(time.perf_counter() - t0, 1)}) + "\n")


def run_table2(
    data_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    *,
    chains: Sequence[str] = CHAINS,
    val_images: int = 200,
    min_images: int = 100,
    evaluate: bool = True,
    r_i: int = 15,
    r_t: int = 3,
    speed_threads: Sequence[int] = (1, 2),
    total_epochs: int | None = None,
    set_threads: Callable[[int], None] | None = None,
    only_rows: Sequence[str] | None = None,
) -> Table2Result | None:
    """Train ``chains`` under ``run_dir``, then (``evaluate``) score every row on the test split.

    ``val_images``: the first N images of the dev split give the per-epoch validation recall
    (the test split is never seen in training). Returns None when ``evaluate`` is False.
    ``set_threads``: the app's thread rule (:func:`isr.app.runtime.set_threads`), required to
    evaluate (the throughput rows set threads through it).
    ``only_rows`` (with ``total_epochs``): train just these rows (their stage directories are
    disjoint from the other rows' but for shared prefixes, so two processes given disjoint
    chains train side by side).
    """
    if only_rows is not None:
        bad = [r for r in only_rows if r not in ROWS]
        if bad or total_epochs is None:
            raise InvalidInput(f"only_rows needs total_epochs and names of {list(ROWS)}, got {bad}")
    if evaluate and set_threads is None:
        raise InvalidInput("run_table2: evaluating needs set_threads (the app's thread rule)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    train, vocab = load_paired(Path(data_dir), "train", min_images=min_images)
    dev, _ = load_paired(Path(data_dir), "dev", vocab=vocab)
    val = dev.select(np.arange(min(val_images, len(dev))))
    command = " ".join(sys.argv)
    rows = ROWS
    bundle = run_dir / "paper" / "bundle"
    if total_epochs is not None:
        rows = train_matched(
            total_epochs, cfg, train, val, vocab, run_dir, command,
            rows=(None if only_rows is None else only_rows) if chains else (),
        )  # fmt: skip
        bundle = run_dir / "matched" / "bundle"
    else:
        for chain in chains:
            train_chain(chain, cfg, train, val, vocab, run_dir, command)
    if not evaluate:
        return None
    missing = [n for n, d in rows.items() if not (run_dir / d / METRICS_FILE).exists()]
    if missing:
        raise InvalidInput(f"rows {missing} are not trained yet under {run_dir}; train both chains")
    test, _ = load_paired(Path(data_dir), "test", vocab=vocab)
    recall = {name: evaluate_stage(run_dir / d, test) for name, d in rows.items()}
    if total_epochs is not None and not (bundle / "config.json").exists():
        write_bundle(run_dir / rows["I->B"], run_dir / rows["I->B->F"], bundle)
    keywords = keyword_report(bundle, test, r_i=r_i, r_t=r_t)
    assert set_threads is not None
    speed = throughput(bundle, test, set_threads, threads=speed_threads)
    seconds = {d: _stage_seconds(run_dir / d) for d in rows.values()}
    out = run_dir / "table2.json"
    write_json(
        out,
        {
            "data_dir": str(data_dir),
            "train_config": cfg.to_dict(),
            "val_images": val_images,
            "validation": f"the first {len(val)} images of the dev split (never trained on)",
            "total_epochs": total_epochs,
            "rows": rows,
            "n_train_images": len(train),
            "n_test_images": len(test),
            "n_labels": len(vocab),
            "recall": recall,
            "keywords": keywords,
            "speed": speed,
            "stage_seconds": seconds,
            "command": command,
        },
    )
    return Table2Result(recall, keywords, speed, seconds, out)


def format_tables(res: Table2Result) -> str:
    """The recall table, the keyword table and the throughput table, in Markdown."""
    keys = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "rsum")
    heads = ["model", "T->I R@1", "R@5", "R@10", "I->T R@1", "R@5", "R@10", "rsum"]
    rows = [[name, *(r[k] for k in keys)] for name, r in res.recall.items()]
    parts = [markdown_table(heads, rows, digits=1)]
    kw = res.keywords
    parts.append(
        markdown_table(
            ["head", "mAP macro", "mAP micro", "labels scored"],
            [
                [h, 100 * kw[h]["macro"], 100 * kw[h]["micro"], kw[h]["labels_scored"]]
                for h in ("image_head", "text_head")
            ],
            digits=1,
        )
    )
    sc = kw["screen"]
    parts.append(
        markdown_table(
            ["R_I", "R_T", "ground truth kept %", "gallery admitted %"],
            [[sc["r_i"], sc["r_t"], 100 * sc["kept"], 100 * sc["admitted"]]],
            digits=1,
        )
    )
    srows = [
        [r["threads"], r["batch"], r["images_per_s"], r["texts_per_s"]] for r in res.speed["rows"]
    ]
    parts.append(markdown_table(["threads", "batch", "images/s", "texts/s"], srows, digits=0))
    return "\n\n".join(parts)


def _shared_tokenizer(cfg: TrainConfig, train: PairedData, run_dir: Path) -> Path:
    """``paper/tokenizer``: trained once (or, with a backbone, the backbone's own: its
    embeddings are indexed by its ids), then read by every stage of both chains (the paper
    recipe finds it in place and keeps it)."""
    tok_dir = run_dir / "paper" / TOKENIZER_DIR
    if not tok_dir.is_dir():
        if cfg.backbone is not None:
            tok = load_tokenizer(Path(cfg.backbone))
        else:
            tok = train_tokenizer(train.row_captions(), cfg.tokenizer_vocab)
        tmp = tok_dir.with_name(TOKENIZER_DIR + ".tmp")
        tok.save_pretrained(str(tmp))
        tmp.rename(tok_dir)
    return tok_dir


def _stage_seconds(stage_dir: Path) -> float:
    """Seconds the stage's epochs took (training and per-epoch validation), from its log."""
    hist = read_json(stage_dir / METRICS_FILE)["history"]
    return float(sum(row["seconds"] for row in hist))


# The order caption rows are trained in: the cheap rows first, so a cut-short run still
# holds B w/o, F w/o and B->F.
CAPTION_ORDER: tuple[str, ...] = ("B w/o", "F w/o", "B->F", "I", "I->B", "I->B->F")
CAPTION_RESULT = "table2_captions.json"


def run_caption_table2(
    data_dir: Path,
    run_dir: Path,
    cfg: TrainConfig,
    total_epochs: int,
    *,
    rows: Sequence[str] = CAPTION_ORDER,
    val_images: int = 200,
    min_images: int = 10,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Table 2 at matched total epochs on a caption-described-image folder (written by
    ``isr eval make-caption-images``), e.g. Flickr30K's captions with the MiniLM text tower.

    Trains on the folder's training split and holds out another
    (:func:`isr.eval.caption_images.training_splits`: train + dev, else dev + test); the
    first ``val_images`` images of the held-out split give the per-epoch recall (logged, no
    checkpoint chosen by it) and all of it the final recall. Keyword targets come from all
    five captions of the source file each split records. Rows train in ``rows`` order, each
    evaluated as soon as it is trained; the result (rows, recall, per-epoch validation of
    every stage of a row) is rewritten into ``run_dir/table2_captions.json`` after each row,
    so a cut-short run keeps what finished, and a rerun resumes (finished rows are read back).
    """
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise InvalidInput(f"unknown rows {bad}: expected some of {list(ROWS)}")
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    info = read_json(data_dir / INFO_FILE)
    tr_split, held = training_splits([sp for sp in SPLITS if sp in info])
    train, vocab = paired_split(
        data_dir, tr_split, Path(info[tr_split]["source"]), min_images=min_images
    )
    test, _ = paired_split(data_dir, held, Path(info[held]["source"]), vocab=vocab)
    val = test.select(np.arange(min(val_images, len(test))))
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / CAPTION_RESULT
    res: dict[str, Any] = read_json(out) if out.exists() else {}
    res.update(
        {
            "data_dir": str(data_dir),
            "train_split": tr_split,
            "test_split": held,
            "validation": f"per epoch: the first {len(val)} images of the {held} split "
            f"(never trained on; no checkpoint chosen); final: all {len(test)} of them",
            "train_config": cfg.to_dict(),
            "total_epochs": total_epochs,
            "n_train_images": len(train),
            "n_test_images": len(test),
            "n_labels": len(vocab),
            "command": " ".join(sys.argv),
        }
    )
    res.setdefault("recall", {})
    res.setdefault("epochs", {})
    plans = matched_rows(total_epochs)
    for name in rows:
        dirs = train_matched(
            total_epochs, cfg, train, val, vocab, run_dir, res["command"], rows=[name]
        )
        res.setdefault("rows", {})[name] = dirs[name]
        res["epochs"][name] = [
            {"stage": st, "dir": _matched_dir(plans[name][: i + 1]),
             "val": [h["val"] for h in read_json(
                 run_dir / _matched_dir(plans[name][: i + 1]) / METRICS_FILE)["history"]]}
            for i, (st, _) in enumerate(plans[name])
        ]  # fmt: skip
        if evaluate and name not in res["recall"]:
            res["recall"][name] = evaluate_stage(run_dir / dirs[name], test)
        write_json(out, res)
    return res
