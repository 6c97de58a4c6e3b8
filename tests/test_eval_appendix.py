"""The appendix sweeps (Tables 1, 6, 7) at matched total epochs on a tiny synthetic world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isr.encoders.train import TrainConfig
from isr.errors import InvalidInput
from isr.eval.appendix import (
    FRAGMENTS,
    appendix_plan,
    evaluate_appendix,
    format_appendix,
    plot_interactions,
    train_appendix,
)
from isr.ingest.synthetic_world import generate_world
from isr.ingest.training_data import load_paired

CFG = TrainConfig(
    epochs=1, batch_size=16, lr=2e-3, hidden=16, heads=2, intermediate=32, layers=1, dim=8,
    codes=8, captions_per_epoch=1, tokenizer_vocab=300, progress=False, device="cpu",
)  # fmt: skip


def test_every_row_sums_to_the_total_and_table2_rows_are_reused() -> None:
    plan = appendix_plan(5, CFG)
    for rows in plan.values():
        for name, steps in rows.items():
            assert sum(s.epochs for s in steps) == 5, name
    assert plan["table1"]["I k=8"][0].dir == "matched/inflate5"  # CFG.codes: Table 2's I
    assert plan["table1"]["I k=16"][0].dir == "appendix/inflate5.k16"
    assert plan["table6"]["B n=32"][0].dir == "matched/base5"  # max_frags 32: B w/o
    t7 = plan["table7"]["B->B n=4"]
    assert [(s.stage, s.epochs, s.dir) for s in t7] == [
        ("base", 2, "matched/base2"), ("shrink-base", 3, "appendix/base2.shrink-base3.f4")
    ]  # fmt: skip
    with pytest.raises(InvalidInput, match="total_epochs"):
        appendix_plan(1, CFG)


def test_fragment_sweep_and_students_train_then_evaluate(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    generate_world(tmp_path / "w", 64, 12, 12, seed=0, m=8, D=8)
    train, vocab = load_paired(tmp_path / "w", "train", min_images=5)
    dev, _ = load_paired(tmp_path / "w", "dev", vocab=vocab)
    test, _ = load_paired(tmp_path / "w", "test", vocab=vocab)
    val = dev.select(np.arange(6))
    run = tmp_path / "run"
    with pytest.raises(InvalidInput, match="unknown tables"):
        train_appendix(2, CFG, train, val, vocab, run, "t", tables=("table9",))
    train_appendix(2, CFG, train, val, vocab, run, "t", tables=("table6", "table7"))
    res = evaluate_appendix(2, CFG, test, run)
    assert res["missing"] == ["table1: I k=8", "table1: I k=16", "table1: I k=32"]
    assert list(res["tables"]["table6"]) == [f"B n={n}" for n in FRAGMENTS]
    for table in ("table6", "table7"):
        for r in res["tables"][table].values():
            assert 0.0 <= r["t2i_r1"] <= 100.0 and r["max_frags"] in FRAGMENTS
    # the student keeps n fragments: its saved model says so, its teacher is B w/o
    m = json.loads((run / "appendix/base1.shrink-base1.f2" / "metrics.json").read_text())
    assert m["teacher"].endswith("matched/base1") and m["epochs"] == 1
    cfg = json.loads((run / "appendix/base1.shrink-base1.f2" / "config.json").read_text())
    assert cfg["max_frags"] == 2
    lines = (run / "appendix_progress.jsonl").read_text().splitlines()
    assert len(lines) == len(FRAGMENTS) + 1 + len(FRAGMENTS)  # table6, the teacher once, table7
    png = plot_interactions(res, tmp_path / "plot" / "r1.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "B->B n=2" in format_appendix(res) and "not trained: table1" in format_appendix(res)
    # a second call trains nothing
    train_appendix(2, CFG, train, val, vocab, run, "t", tables=("table6", "table7"))
    assert len((run / "appendix_progress.jsonl").read_text().splitlines()) == len(lines)
