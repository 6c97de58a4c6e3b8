"""`isr train` validates on a split it never trains on and says which."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from isr.app.cli import main
from isr.ingest.synthetic_world import generate_world

QUICK = json.dumps({"epochs": 1, "batch_size": 8, "hidden": 16, "heads": 2, "intermediate": 32,
                    "layers": 1, "dim": 8, "captions_per_epoch": 1, "tokenizer_vocab": 300,
                    "progress": False, "device": "cpu"})  # fmt: skip


def test_train_names_its_validation_split_and_refuses_the_training_one(tmp_path: Path) -> None:
    generate_world(tmp_path / "w", 40, 10, 0, seed=0, m=8, D=8)
    base = ["train", "--data", str(tmp_path / "w"), "--stage", "fast", "--config", QUICK,
            "--min-images", "5"]  # fmt: skip
    res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "a"), "--val-split", "train"])
    assert res.exit_code != 0 and "is the training split" in res.output
    assert not (tmp_path / "a").exists()
    res = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "validation: per-epoch recall on the 10 images of the 'dev' split" in res.output
    m = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert (m["n_train_images"], m["n_val_images"]) == (40, 10)


def test_every_config_option_refuses_bad_json_by_name(tmp_path: Path) -> None:
    generate_world(tmp_path / "w", 20, 5, 5, seed=0, m=8, D=8)
    w = str(tmp_path / "w")
    commands = [
        ["train", "--data", w, "--stage", "fast", "--out", str(tmp_path / "t")],
        ["eval", "table2", "--data", w, "--out", str(tmp_path / "t2")],
        ["eval", "appendix", "--data", w, "--out", str(tmp_path / "ap"), "--total-epochs", "2"],
    ]
    for cmd in commands:
        for bad, reason in [("{", "--config: not valid JSON"), ("[1]", "expected a JSON object")]:
            res = CliRunner().invoke(main, [*cmd, "--config", bad])
            assert res.exit_code != 0, (cmd, bad, res.output)
            assert reason in res.output, (cmd, bad, res.output)
            assert "Traceback" not in res.output
    assert not any((tmp_path / d).exists() for d in ("t", "t2", "ap"))
