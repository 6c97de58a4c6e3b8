"""The Table 2 driver end to end on a tiny synthetic world (train, resume, evaluate)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from isr.app.runtime import set_threads
from isr.encoders.train import TrainConfig
from isr.errors import InvalidInput
from isr.eval.table2 import ROWS, format_tables, run_table2
from isr.ingest.synthetic_world import generate_world

CFG = TrainConfig(
    epochs=1, batch_size=16, lr=2e-3, hidden=16, heads=2, intermediate=32, layers=1, dim=8,
    codes=2, captions_per_epoch=1, tokenizer_vocab=300, progress=False, device="cpu",
)  # fmt: skip


def test_table2_trains_every_row_then_only_evaluates(tmp_path: Path) -> None:
    generate_world(tmp_path / "w", 64, 12, 12, seed=0, m=8, D=8)
    run = tmp_path / "run"
    res = run_table2(
        tmp_path / "w",
        run,
        CFG,
        val_images=6,
        min_images=5,
        speed_threads=(1,),
        set_threads=set_threads,
    )
    assert res is not None
    assert list(res.recall) == list(ROWS)
    for row in res.recall.values():
        assert all(0.0 <= row[k] <= 100.0 for k in row if k != "rsum")
    sc = res.keywords["screen"]
    assert (sc["r_i"], sc["r_t"], sc["n_queries"]) == (15, 3, 60)
    assert 0.0 <= sc["kept"] <= 1.0 and 0.0 < sc["admitted"] <= 1.0
    assert 0.0 < res.keywords["image_head"]["macro"] <= 1.0
    assert {(r["threads"], r["batch"]) for r in res.speed["rows"]} == {(1, 256), (1, 1)}
    saved = json.loads(res.json_path.read_text())
    assert saved["recall"] == res.recall
    assert "| I->B->F" in format_tables(res)
    # A second call finds every stage finished: nothing is retrained, the scores are equal.
    stamp = {d: (run / d / "model.safetensors").stat().st_mtime_ns for d in ROWS.values()}
    again = run_table2(
        tmp_path / "w",
        run,
        CFG,
        chains=(),
        val_images=6,
        min_images=5,
        speed_threads=(1,),
        set_threads=set_threads,
    )
    assert again is not None and again.recall == res.recall
    assert stamp == {d: (run / d / "model.safetensors").stat().st_mtime_ns for d in ROWS.values()}


def test_matched_rows_sum_to_the_same_total() -> None:
    from isr.eval.table2 import matched_rows

    plans = matched_rows(7)
    assert list(plans) == list(ROWS)
    assert {name: sum(e for _, e in p) for name, p in plans.items()} == dict.fromkeys(ROWS, 7)
    assert plans["I->B->F"] == [("inflate", 2), ("shrink-base", 2), ("shrink-fast", 3)]
    assert plans["B->F"] == [("base", 3), ("shrink-fast", 4)]


def test_table2_at_matched_epochs(tmp_path: Path) -> None:
    generate_world(tmp_path / "w", 64, 12, 12, seed=0, m=8, D=8)
    run = tmp_path / "run"
    res = run_table2(
        tmp_path / "w",
        run,
        CFG,
        val_images=6,
        min_images=5,
        speed_threads=(1,),
        set_threads=set_threads,
        total_epochs=3,
    )
    assert res is not None and list(res.recall) == list(ROWS)
    saved = json.loads(res.json_path.read_text())
    assert saved["total_epochs"] == 3 and "dev split" in saved["validation"]
    for name, d in saved["rows"].items():  # each stage's own epochs add up to 3
        parts = d.removeprefix("matched/").split(".")
        assert sum(int(re.search(r"\d+$", p).group()) for p in parts) == 3, name
    i_b = json.loads((run / saved["rows"]["I->B"] / "metrics.json").read_text())
    assert i_b["epochs"] == 2 and i_b["teacher"].endswith("matched/inflate1")


def test_throughput_sets_threads_through_the_given_rule(tmp_path: Path) -> None:
    """encoder_eval.throughput sets each thread count through the rule it is given (the app's
    set_threads) and restores the count it found; run_table2 refuses to evaluate without one."""
    from isr.eval.encoder_eval import throughput
    from isr.ingest.training_data import load_paired

    generate_world(tmp_path / "w", 64, 12, 12, seed=0, m=8, D=8)
    run = tmp_path / "run"
    with pytest.raises(InvalidInput, match="set_threads"):
        run_table2(tmp_path / "w", run, CFG, val_images=6, min_images=5)
    run_table2(tmp_path / "w", run, CFG, chains=("plain",), val_images=6, min_images=5,
               evaluate=False)  # fmt: skip
    from isr.encoders.bundle import write_bundle

    b = write_bundle(run / "plain" / "base", run / "plain" / "shrink-fast", tmp_path / "bundle")
    test, _ = load_paired(tmp_path / "w", "test", min_images=5)
    calls: list[int] = []

    def rule(n: int) -> None:
        calls.append(n)
        set_threads(n)

    before = torch.get_num_threads()
    out = throughput(b, test, rule, threads=(2, 1), batches=(4,), n_items=8)
    assert calls == [2, 1, before] and torch.get_num_threads() == before
    assert [r["threads"] for r in out["rows"]] == [2, 1]


def test_matched_rows_can_train_in_disjoint_processes(tmp_path: Path) -> None:
    """only_rows trains just the named rows (what two side-by-side processes use)."""
    generate_world(tmp_path / "w", 64, 12, 12, seed=0, m=8, D=8)
    run = tmp_path / "run"
    kw = {"val_images": 6, "min_images": 5, "evaluate": False}
    with pytest.raises(InvalidInput, match="only_rows"):
        run_table2(tmp_path / "w", run, CFG, total_epochs=3, only_rows=["F"], **kw)
    with pytest.raises(InvalidInput, match="only_rows needs total_epochs"):
        run_table2(tmp_path / "w", run, CFG, only_rows=["F w/o"], **kw)
    run_table2(tmp_path / "w", run, CFG, total_epochs=3, only_rows=["F w/o", "B->F"], **kw)
    trained = sorted(p.name for p in (run / "matched").iterdir())
    assert trained == ["base1", "base1.shrink-fast2", "fast3"]
