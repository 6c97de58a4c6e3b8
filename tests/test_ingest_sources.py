"""Gallery sources: captions, pre-encoded JSONL / Parquet, Karpathy JSON + images through a
tiny randomly initialised ViT; each with its bad inputs and exact resume positions."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_items
from ingest_helpers import tiny_bundle

from isr.encoders.record import Encoded
from isr.errors import Conflict, InvalidInput
from isr.ingest.captions import CaptionSource
from isr.ingest.encoded_export import write_jsonl, write_parquet
from isr.ingest.encoded_file import EncodedFileSource
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.karpathy import KarpathySource
from isr.ingest.loader import IngestOptions, load_gallery
from isr.plugin.embedded.index import EmbeddedIndex


def opts(**kw) -> IngestOptions:
    return IngestOptions(**{"batch_size": 4, "commit_every": 8, "progress": False, **kw})


def all_batches(source, batch_size: int, start: int = 0):
    out = list(source.batches(batch_size, start))
    for a, b in itertools.pairwise(out):
        assert a.end == b.start  # batches tile the positions
    return out


# -- captions ----------------------------------------------------------------------------------


def test_caption_lines_ids_and_resume_positions(tmp_path: Path) -> None:
    f = tmp_path / "test_caps.txt"
    f.write_bytes(b"a dog\nthe dog runs\n\nbad \xff byte\na cat\nlast line without newline")
    src = CaptionSource(f, per_image=2)
    assert src.size() == 6
    bs = all_batches(src, 4)
    assert [(b.start, b.end) for b in bs] == [(0, 4), (4, 6)]
    assert [i for b in bs for i in b.ids] == ["0#0", "0#1", "2#0", "2#1"]
    assert [(s.position, s.reason) for b in bs for s in b.skipped] == [
        (2, "empty caption"),
        (3, "not UTF-8"),
    ]
    assert bs[0].sources[1] == {"text": "the dog runs", "image": "0"}
    resumed = all_batches(src, 4, start=4)
    assert [i for b in resumed for i in b.ids] == ["2#0", "2#1"] and resumed[0].start == 4
    plain = all_batches(CaptionSource(f), 10)
    assert plain[0].ids == ("0", "1", "4", "5") and plain[0].sources[0] == {"text": "a dog"}
    with pytest.raises(InvalidInput, match="start"):
        list(src.batches(4, start=7))


# -- pre-encoded files -------------------------------------------------------------------------


def encoded_items(n: int, seed: int = 0) -> Encoded:
    return random_items(n, d_fast=16, d_frag=8, n_frags=4, seed=seed)


def test_jsonl_round_trip_and_bad_records(tmp_path: Path) -> None:
    f = tmp_path / "items.jsonl"
    items = encoded_items(10)
    ids = [f"doc{i}" for i in range(10)]
    write_jsonl(f, ids, items, [{"n": i} for i in range(10)])
    good = json.loads(f.read_text().splitlines()[0])
    bad = [
        "{not json",
        json.dumps({**good, "id": "wrongdim", "fast": good["fast"][:5]}),
        json.dumps({**good, "id": "nan"}).replace(str(good["fast"][0]), "NaN", 1),
        json.dumps({**good, "id": "zero", "fragments": [[0.0] * 8]}),
        json.dumps({**good, "id": "huge", "fragments": [[1e30] * 8]}),  # finite: normalised
        json.dumps({**good, "id": "many", "fragments": good["fragments"] * 9}),
        json.dumps({**good, "id": "ragged", "fragments": [[1.0] * 8, [1.0] * 7]}),
        json.dumps({"id": "nofast", "fragments": good["fragments"]}),
        json.dumps({**good, "id": "kw", "keywords": ["a", "a"], "keyword_probs": [1, 1]}),
        "",  # a blank line: a position, not a record
    ]
    with f.open("a") as fh:
        fh.write("\n".join(bad) + "\n")
    target = str(tmp_path / "idx")
    r = load_gallery(EncodedFileSource(f), target, None, opts(max_frags=32))
    assert r.added == 11 and r.end == 20 and r.complete
    assert r.skipped_by_reason == {
        "malformed record": 4,
        "wrong dimension": 1,
        "NaN or inf": 1,
        "zero norm": 1,
        "too many fragments": 1,
    }
    with EmbeddedIndex.open(target, readonly=True) as idx:
        c = idx.config
        assert (c.d_fast, c.d_frag, c.max_frags, c.bundle_fingerprint) == (16, 8, 32, "")
        rows = idx.rows_of(ids)
        keys = np.array([rows[i] for i in ids])
        np.testing.assert_allclose(idx.fast.vectors_at(keys), items.fast, atol=1e-6)
        frags, mask = idx.fragments.gather(keys)
        np.testing.assert_array_equal(mask[:, :4], items.mask)
        np.testing.assert_allclose(frags[:, :4][items.mask], items.fragments[items.mask], atol=2e-3)
        assert [list(x) for x in idx.labels_of(keys)] == [list(k.labels) for k in items.keywords]
        _, src = idx.docs_at([rows["doc3"]])[rows["doc3"]]
        assert json.loads(src) == {"n": 3}


def test_parquet_round_trip_resumes_inside_a_row_group(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    f = tmp_path / "items.parquet"
    parts = [encoded_items(6, seed=s) for s in range(3)]  # 3 row groups of 6
    batches = [([f"p{s}-{i}" for i in range(6)], parts[s], None) for s in range(3)]
    assert write_parquet(f, iter(batches)) == 18
    src = EncodedFileSource(f)
    assert src.size() == 18
    bs = all_batches(src, 4, start=7)
    assert bs[0].start == 7 and bs[-1].end == 18
    assert [i for b in bs for i in b.ids] == [f"p1-{i}" for i in range(1, 6)] + [
        f"p2-{i}" for i in range(6)
    ]
    first = bs[0].payload
    np.testing.assert_allclose(first.fast[0], parts[1].fast[1], atol=1e-6)
    np.testing.assert_allclose(first.fragments[0], parts[1].fragments[1][parts[1].mask[1]])
    target = str(tmp_path / "idx")
    r = load_gallery(src, target, None, opts(fingerprint="abc"))
    assert r.added == 18 and r.skipped == 0
    with pytest.raises(Conflict, match=r"bundle abc.*none"):
        load_gallery(src, target, None, opts())  # features of unknown origin into that index


# -- Karpathy JSON + images through a local vision backbone -------------------------------------


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    d = tmp_path_factory.mktemp("vit")
    cfg = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8,
    )  # fmt: skip
    torch.manual_seed(0)
    ViTModel(cfg).save_pretrained(d)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


def karpathy_files(tmp_path: Path) -> tuple[Path, Path]:
    from PIL import Image

    imgs = tmp_path / "images"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i in range(7):
        name = f"{1000 + i}.jpg" if i % 2 else f"{1000 + i}.png"
        px = rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)
        Image.fromarray(px).save(imgs / name)
        entries.append({"filename": name, "imgid": i, "split": "test" if i < 6 else "train",
                        "sentences": [{"raw": f"caption {k} of {i}"} for k in range(2)]})  # fmt: skip
    data = (imgs / "1001.jpg").read_bytes()
    (imgs / "1001.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (imgs / "1003.jpg").write_text("not an image")
    (imgs / "1004.png").unlink()  # missing
    js = tmp_path / "dataset_flickr30k.json"
    js.write_text(json.dumps({"dataset": "flickr30k", "images": entries}))
    return js, imgs


def test_vit_backbone_gives_kmeans_reduced_patches(vit_dir: Path) -> None:
    from PIL import Image

    bb = ImageBackbone.load(vit_dir, k=6)
    assert bb.dim == 32 and bb.model_type == "vit"
    f = bb.features([Image.new("RGB", (40, 50), (200, 10, 10)), Image.new("RGB", (9, 9))])
    assert f.regions.shape == (2, 6, 32) and f.mask.all() and f.pooled.shape == (2, 32)
    assert np.isfinite(f.regions).all()
    wide = ImageBackbone.load(vit_dir, k=32)  # 16 patches < 32: kept as they are, padded
    g = wide.features([Image.new("RGB", (32, 32))])
    assert g.regions.shape == (1, 32, 32) and g.mask.sum() == 16


def test_karpathy_images_load_and_bad_files_are_skipped(vit_dir: Path, tmp_path: Path) -> None:
    js, imgs = karpathy_files(tmp_path)
    src = KarpathySource(js, imgs, ImageBackbone.load(vit_dir, k=8), "test")
    assert src.size() == 6 and src.feature_dim == 32
    bundle = tiny_bundle(32)
    target = str(tmp_path / "idx")
    r = load_gallery(src, target, bundle, opts(batch_size=3))
    assert r.added == 3 and r.complete
    reasons = {(s.id, s.reason) for s in r.skip_examples}
    assert reasons == {
        ("1001.jpg", "unreadable image"),
        ("1003.jpg", "unreadable image"),
        ("1004.png", "missing image"),
    }
    with EmbeddedIndex.open(target, readonly=True) as idx:
        assert sorted(idx.table.iter_live_ids()) == ["1000.png", "1002.png", "1005.jpg"]
        row = idx.rows_of(["1002.png"])["1002.png"]
        assert json.loads(idx.docs_at([row])[row][1]) == {
            "filename": "1002.png",
            "captions": ["caption 0 of 2", "caption 1 of 2"],
            "imgid": 2,
        }
    with pytest.raises(InvalidInput, match="splits present"):
        KarpathySource(js, imgs, src.backbone, "val")
    with pytest.raises(InvalidInput, match="32 dims, the bundle's image tower takes 16"):
        load_gallery(src, str(tmp_path / "idx2"), tiny_bundle(16), opts())


def test_karpathy_applies_exif_orientation(vit_dir: Path, tmp_path: Path) -> None:
    """One decoder with the image folder (isr.ingest.images.decode_image): a photo stored
    sideways with EXIF "rotate 90" gives the features of its upright pixels."""
    from PIL import Image

    rng = np.random.default_rng(1)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    stored = Image.fromarray(rng.integers(0, 255, (20, 40, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to view
    stored.save(imgs / "r.jpg", exif=exif, quality=95)
    (imgs / "empty.jpg").write_bytes(b"")
    entries = [
        {"filename": n, "imgid": i, "split": "test", "sentences": [{"raw": "x"}]}
        for i, n in enumerate(["r.jpg", "empty.jpg"])
    ]
    js = tmp_path / "d.json"
    js.write_text(json.dumps({"images": entries}))
    bb = ImageBackbone.load(vit_dir, k=8)
    (batch,) = all_batches(KarpathySource(js, imgs, bb, "test"), 4)
    assert [(s.id, s.reason) for s in batch.skipped] == [("empty.jpg", "empty file")]
    with Image.open(imgs / "r.jpg") as im:
        upright = im.convert("RGB").transpose(Image.Transpose.ROTATE_270)
        sideways = im.convert("RGB")
    assert upright.size == (20, 40)
    want, other = bb.features([upright]).regions, bb.features([sideways]).regions
    got = batch.payload.feats
    assert np.allclose(got, want, atol=1e-5) and not np.allclose(got, other, atol=1e-3)
