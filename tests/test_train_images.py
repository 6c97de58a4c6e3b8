"""From a folder of captioned photos to a searchable index through the command lines:
`isr train --images` (features extracted once, resumable; presets; the estimate and the stage
table), the bundle recording its eyes, `load_gallery.py images` finding the backbone there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from photo_helpers import save_vit

from isr.app.cli import main
from isr.app.presets import PRESETS, train_fields
from isr.encoders.eyes import read_eyes
from isr.errors import Conflict, InvalidInput
from isr.ingest.extract import extract_precomp
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.toy_photos import write_toy_photos

QUICK = '{"epochs": 1, "val_size": 8, "device": "cpu", "progress": false, "batch_size": 16}'


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("toy")
    caps = write_toy_photos(d / "photos", 40, seed=2)
    return d / "photos", caps, save_vit(d / "vit")


def test_extraction_is_resumable_and_checks_its_inputs(toy, tmp_path: Path) -> None:
    photos, caps, vit = toy
    bb = ImageBackbone.load(vit, k=8)
    clean = extract_precomp(photos, caps, bb, tmp_path / "clean", batch_size=8, progress=False)
    assert clean.sizes == {"train": 36, "dev": 4} and not clean.reused
    assert read_eyes(tmp_path / "clean") == bb.eyes

    calls = {"n": 0}
    real = bb.features

    def dying(ims):  # the process "dies" in the third batch
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("power cut")
        return real(ims)

    bb.features = dying  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        extract_precomp(photos, caps, bb, tmp_path / "resumed", batch_size=8, progress=False)
    state = json.loads((tmp_path / "resumed" / "extract.json").read_text())
    assert state["done"]["train"] == 16
    bb.features = real  # type: ignore[method-assign]
    again = extract_precomp(photos, caps, bb, tmp_path / "resumed", batch_size=8, progress=False)
    assert again.sizes == clean.sizes
    for split in ("train", "dev"):
        a = np.load(tmp_path / "clean" / f"{split}_ims.npy")
        b = np.load(tmp_path / "resumed" / f"{split}_ims.npy")
        assert np.array_equal(a, b)
        assert (tmp_path / "clean" / f"{split}_caps.txt").read_text() == (
            tmp_path / "resumed" / f"{split}_caps.txt"
        ).read_text()
    assert extract_precomp(photos, caps, bb, tmp_path / "clean", progress=False).reused
    with pytest.raises(Conflict, match=r"\(changed: k\)"):
        extract_precomp(photos, caps, ImageBackbone.load(vit, k=4), tmp_path / "clean",
                        progress=False)  # fmt: skip


def test_train_from_photos_then_load_and_search(toy, tmp_path: Path) -> None:
    from isr.ingest.load_gallery import main as load_main

    photos, caps, vit = toy
    run = tmp_path / "run"
    args = ["train", "--images", str(photos), "--captions", str(caps), "--image-backbone",
            str(vit), "--k", "8", "--out", str(run), "--recipe", "paper", "--preset", "tiny",
            "--config", QUICK, "--min-images", "5"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "features: {'train': 36, 'dev': 4} images" in out
    assert "estimated" in out and " of training steps here" in out
    for stage in ("inflate", "shrink-base", "shrink-fast"):
        assert f"| {stage} " in out, out  # the final table of the stages
    eyes = read_eyes(run / "bundle")
    assert eyes is not None and eyes.kind == "hf" and eyes.reduction["k"] == 8
    assert eyes == ImageBackbone.load(vit, k=8).eyes
    res = CliRunner().invoke(main, args)  # a rerun reuses the features and the stages
    assert res.exit_code == 0 and "(reused)" in res.stdout

    res = CliRunner().invoke(load_main, [
        "images", str(photos), "--bundle", str(run / "bundle"), "--index", str(tmp_path / "idx"),
        "--fields", str(caps), "--no-progress", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["added"] == 40
    res = CliRunner().invoke(main, [
        "search", str(tmp_path / "idx"), "--text", "a red circle", "--bundle",
        str(run / "bundle"), "--filter", '{"term": {"shape": "circle"}}', "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)["hits"]
    assert hits and all(h["source"]["shape"] == "circle" for h in hits)


def test_presets_and_config_wording() -> None:
    assert set(PRESETS) == {"tiny", "small", "paper"} and PRESETS["paper"] == {}
    assert train_fields("tiny", {"epochs": 9})["epochs"] == 9
    with pytest.raises(
        InvalidInput, match="unknown training setting `epoch`; did you mean `epochs`"
    ):
        train_fields(None, {"epoch": 3})
    res = CliRunner().invoke(main, ["train", "--data", "x", "--images", "y", "--out", "o",
                                    "--recipe", "paper"])  # fmt: skip
    assert res.exit_code != 0 and "exactly one of --data DIR and --images DIR" in res.output
