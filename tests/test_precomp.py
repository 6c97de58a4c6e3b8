"""The SCAN precomp reader: on a synthetic world, hand-made files, the real Flickr30K captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from isr.errors import InvalidInput, NotFound
from isr.ingest.precomp import PrecompSplit, group_captions, npy_shape, read_captions
from isr.ingest.synthetic_world import generate_world

FLICKR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "flickr30k"


def _write(d: Path, split: str, x: np.ndarray, caps: list[str], final_newline: bool = True) -> None:
    np.save(d / f"{split}_ims.npy", x)
    (d / f"{split}_caps.txt").write_text("\n".join(caps) + ("\n" if final_newline else ""))


def test_reads_a_synthetic_world(tmp_path: Path) -> None:
    generate_world(tmp_path, n_train=300, n_dev=40, n_test=0, seed=3, m=8, D=16)
    sp = PrecompSplit.open(tmp_path, "train")
    assert (sp.n_images, sp.m, sp.dim, sp.caps_per_image) == (300, 8, 16, 5)
    assert len(sp.captions) == 1500
    assert sp.captions_of(299) == sp.captions[1495:1500]
    seen = []
    for s, x in sp.iter_batches(64, start=10):
        assert x.dtype == np.float32 and x.flags.writeable
        np.testing.assert_array_equal(x, sp.images[s : s + len(x)])
        seen.append((s, len(x)))
    assert seen[0] == (10, 64) and seen[-1] == (266, 34)
    assert sum(b for _, b in seen) == 290
    assert list(sp.iter_batches(8, start=300)) == []
    assert PrecompSplit.open(tmp_path, "dev").n_images == 40
    with pytest.raises(NotFound, match=r"test_ims\.npy"):
        PrecompSplit.open(tmp_path, "test")


def test_final_newline_or_not_and_one_caption_per_image(tmp_path: Path) -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    _write(tmp_path, "a", x, [f"cap {i}" for i in range(10)], final_newline=False)
    sp = PrecompSplit.open(tmp_path, "a")
    assert sp.captions[-1] == "cap 9" and sp.captions_of(1) == [f"cap {i}" for i in range(5, 10)]
    _write(tmp_path, "b", x, ["one", "two"])
    sp = PrecompSplit.open(tmp_path, "b")
    assert sp.caps_per_image == 1 and sp.captions_of(1) == ["two"]
    (tmp_path / "c.txt").write_bytes(b"x\r\ny\r\n")
    assert read_captions(tmp_path / "c.txt") == ["x", "y"]


def test_caption_count_mismatch_names_both_counts(tmp_path: Path) -> None:
    _write(tmp_path, "a", np.zeros((4, 2, 3), np.float32), ["c"] * 7)
    with pytest.raises(InvalidInput, match=r"4 images .* 7 captions .* 20 \(5 per image\)"):
        PrecompSplit.open(tmp_path, "a")


def test_missing_and_damaged_files(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no_such_dir"):
        PrecompSplit.open(tmp_path / "no_such_dir", "train")
    _write(tmp_path, "a", np.ones((50, 4, 8), np.float32), ["c"] * 250)
    (tmp_path / "a_caps.txt").unlink()
    with pytest.raises(NotFound, match=r"a_caps\.txt"):
        PrecompSplit.open(tmp_path, "a")
    _write(tmp_path, "a", np.ones((50, 4, 8), np.float32), ["c"] * 250)
    p = tmp_path / "a_ims.npy"
    p.write_bytes(p.read_bytes()[:-100])  # a copy cut short
    with pytest.raises(InvalidInput, match="truncated"):
        PrecompSplit.open(tmp_path, "a")
    p.write_bytes(b"not an npy file at all")
    with pytest.raises(InvalidInput, match=r"not a \.npy"):
        npy_shape(p)
    np.save(p, np.ones((50, 32), np.float32))
    with pytest.raises(InvalidInput, match=r"\(N, m, D\)"):
        PrecompSplit.open(tmp_path, "a")
    np.save(p, np.ones((50, 4, 8), np.int32))
    with pytest.raises(InvalidInput, match="float"):
        PrecompSplit.open(tmp_path, "a")
    (tmp_path / "a_caps.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(InvalidInput, match="line 2 is not UTF-8"):
        read_captions(tmp_path / "a_caps.txt")


def test_bad_arguments(tmp_path: Path) -> None:
    _write(tmp_path, "a", np.zeros((2, 2, 2), np.float32), ["c"] * 10)
    with pytest.raises(InvalidInput, match="split"):
        PrecompSplit.open(tmp_path, "../a")
    sp = PrecompSplit.open(tmp_path, "a")
    with pytest.raises(InvalidInput, match="batch_size"):
        next(sp.iter_batches(0))
    with pytest.raises(InvalidInput, match="start"):
        next(sp.iter_batches(1, start=3))
    with pytest.raises(InvalidInput, match="out of range"):
        sp.captions_of(2)
    with pytest.raises(InvalidInput, match="groups of 5"):
        group_captions(["a"] * 6)


@pytest.mark.skipif(not FLICKR.is_dir(), reason=f"Flickr30K captions not found at {FLICKR}")
def test_real_flickr30k_caption_files() -> None:
    test = read_captions(FLICKR / "test_caps.txt")  # this file has no final newline
    dev = read_captions(FLICKR / "dev_caps.txt")
    assert (len(test), len(dev)) == (5000, 5070)
    assert all(c.strip() for c in test + dev)
    assert len(group_captions(test)) == 1000 and len(group_captions(dev)) == 1014
