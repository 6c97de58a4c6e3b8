"""The gallery loader: streamed, idempotent, resumable, bundle-checked, bad items skipped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ingest_helpers import Crashing, tiny_bundle

from isr.encoders.bundle import Bundle
from isr.errors import Conflict, InvalidInput
from isr.ingest.captions import CaptionSource
from isr.ingest.loader import IngestOptions, StrictStop, load_gallery
from isr.ingest.precomp_source import PrecompSource
from isr.ingest.synthetic_world import generate_world
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.pipeline import SearchOptions, search


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return tiny_bundle(16)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("world")
    generate_world(d, n_train=300, n_dev=0, n_test=0, seed=4, m=8, D=16)
    return d


def opts(**kw: Any) -> IngestOptions:
    return IngestOptions(**{"batch_size": 32, "commit_every": 64, "progress": False, **kw})


def write_precomp(d: Path, feats: np.ndarray, split: str = "test") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / f"{split}_ims.npy", feats.astype(np.float32))
    caps = [f"caption {k} of image {i}" for i in range(len(feats)) for k in range(5)]
    (d / f"{split}_caps.txt").write_text("\n".join(caps) + "\n")
    return d


def ids_of(index: EmbeddedIndex) -> list[str]:
    return list(index.table.iter_live_ids())


def test_precomp_world_loads_with_captions_and_is_searchable(
    world: Path, bundle: Bundle, tmp_path: Path
) -> None:
    r = load_gallery(PrecompSource(world, "train"), str(tmp_path / "idx"), bundle, opts())
    assert (r.added, r.replaced, r.skipped, r.start, r.end, r.complete) == (
        300, 0, 0, 0, 300, True,
    )  # fmt: skip
    assert r.commits == 5  # after positions 64, 128, 192, 256 (whole batches of 32), and 300
    assert r.bytes_per_document and r.bytes_per_document > 0
    assert "300 documents" in r.summary()
    with EmbeddedIndex.open(tmp_path / "idx", readonly=True) as idx:
        c = idx.config
        assert (c.d_fast, c.d_frag, c.max_frags, c.r_i) == (6, 8, 8, 4)
        assert c.bundle_fingerprint == bundle.fingerprint and c.modality == "image"
        assert sorted(ids_of(idx), key=int) == [str(i) for i in range(300)]
        caps = (world / "train_caps.txt").read_text().splitlines()
        row = idx.rows_of(["7"])["7"]
        assert json.loads(idx.docs_at([row])[row][1]) == {"captions": caps[35:40]}
        res = search(idx, bundle.encode_texts(["a dog on the beach"]), SearchOptions(size=5))
        assert len(res.hits) == 5 and all(h.source and "captions" in h.source for h in res.hits)


def test_rerun_replaces_and_resume_continues_exactly(
    world: Path, bundle: Bundle, tmp_path: Path
) -> None:
    src, target = PrecompSource(world, "train"), str(tmp_path / "idx")
    first = load_gallery(src, target, bundle, opts(limit=100))
    assert first.end == 128 and not first.complete  # whole batches: 4 x 32
    second = load_gallery(src, target, bundle, opts(resume=True))
    assert (second.start, second.end, second.added, second.replaced) == (128, 300, 172, 0)
    assert second.complete and second.resumed
    with EmbeddedIndex.open(target, readonly=True) as idx:
        assert len(idx) == 300 and idx.n_rows == 300  # nothing written twice
    again = load_gallery(src, target, bundle, opts(resume=True))
    assert again.loaded == 0 and "already loaded completely" in again.note
    rerun = load_gallery(src, target, bundle, opts())  # no --resume: replace, never duplicate
    assert (rerun.added, rerun.replaced) == (0, 300)
    with EmbeddedIndex.open(target, readonly=True) as idx:
        assert len(idx) == 300 and sorted(ids_of(idx), key=int) == [str(i) for i in range(300)]


def test_a_crash_keeps_committed_work_and_resume_redoes_only_the_tail(
    world: Path, bundle: Bundle, tmp_path: Path
) -> None:
    target = str(tmp_path / "idx")
    with pytest.raises(RuntimeError, match="disk on fire"):
        load_gallery(Crashing(PrecompSource(world, "train"), 5), target, bundle, opts())
    with EmbeddedIndex.open(target, readonly=True) as idx:
        # 5 batches written, commits after the 2nd and 4th: the 5th is lost, cleanly
        assert len(idx) == idx.n_rows == 128
        assert idx.committed_meta()["ingest"]["sources"][0]["position"] == 128
    r = load_gallery(PrecompSource(world, "train"), target, bundle, opts(resume=True))
    assert (r.start, r.added, r.replaced) == (128, 172, 0)
    with EmbeddedIndex.open(target, readonly=True) as idx:
        assert len(idx) == idx.n_rows == 300


def test_another_bundle_is_refused_naming_both_fingerprints(
    world: Path, bundle: Bundle, tmp_path: Path
) -> None:
    target = str(tmp_path / "idx")
    load_gallery(PrecompSource(world, "train"), target, bundle, opts(limit=10))
    other = tiny_bundle(16, seed=1)
    with pytest.raises(Conflict) as e:
        load_gallery(PrecompSource(world, "train"), target, other, opts())
    assert bundle.fingerprint in str(e.value) and other.fingerprint in str(e.value)
    caps = CaptionSource(world / "train_caps.txt")  # a text gallery into an image index
    with pytest.raises(Conflict, match="holds image documents"):
        load_gallery(caps, target, bundle, opts())


def test_bad_region_features_are_skipped_and_reported(bundle: Bundle, tmp_path: Path) -> None:
    feats = np.random.default_rng(0).normal(size=(40, 6, 16))
    feats[3, 2, 5] = np.nan
    feats[20, 0, 0] = np.inf
    d = write_precomp(tmp_path / "data", feats)
    r = load_gallery(PrecompSource(d, "test"), str(tmp_path / "idx"), bundle, opts())
    assert (r.added, r.skipped, r.skipped_by_reason) == (38, 2, {"NaN or inf features": 2})
    assert [(s.position, s.id) for s in r.skip_examples] == [(3, "3"), (20, "20")]
    assert "skipped 2: 2 NaN or inf features" in r.summary()
    wrong = write_precomp(tmp_path / "wrong", np.ones((4, 6, 12)))
    with pytest.raises(InvalidInput, match="12 dims, the bundle's image tower takes 16"):
        load_gallery(PrecompSource(wrong, "test"), str(tmp_path / "idx2"), bundle, opts())


def test_strict_stops_at_the_first_bad_item_after_committing_the_work_before_it(
    bundle: Bundle, tmp_path: Path
) -> None:
    feats = np.random.default_rng(1).normal(size=(100, 6, 16))
    feats[70, 1, 1] = np.nan
    d = write_precomp(tmp_path / "data", feats)
    target = str(tmp_path / "idx")
    with pytest.raises(StrictStop, match="position 70") as e:
        load_gallery(PrecompSource(d, "test"), target, bundle, opts(strict=True))
    assert e.value.report.end == 64 and e.value.report.added == 64
    with EmbeddedIndex.open(target, readonly=True) as idx:
        assert len(idx) == 64
    r = load_gallery(PrecompSource(d, "test"), target, bundle, opts(resume=True))
    assert (r.start, r.added, r.skipped) == (64, 35, 1)


def test_caption_gallery_with_duplicate_and_empty_items(bundle: Bundle, tmp_path: Path) -> None:
    f = tmp_path / "caps.token"
    lines = ["a.jpg#0\ta dog on the beach", "a.jpg#1\tthe dog runs", "a.jpg#0\tsame id again",
             "b.jpg#0\t   ", "b.jpg#1\ta cat on a sofa", "no tab here"]  # fmt: skip
    f.write_text("\n".join(lines) + "\n")
    target = str(tmp_path / "idx")
    r = load_gallery(CaptionSource(f, "tsv"), target, bundle, opts(batch_size=8))
    assert r.added == 3
    assert r.skipped_by_reason == {"duplicate id": 1, "empty caption": 1, "malformed line": 1}
    with EmbeddedIndex.open(target, readonly=True) as idx:
        assert idx.config.modality == "text"
        assert sorted(ids_of(idx)) == ["a.jpg#0", "a.jpg#1", "b.jpg#1"]
        row = idx.rows_of(["a.jpg#0"])["a.jpg#0"]
        _, src = idx.docs_at([row])[row]
        assert src == '{"text": "a dog on the beach", "image": "a.jpg"}'


def test_elasticsearch_targets_are_checked_before_anything_is_sent(
    world: Path, bundle: Bundle, tmp_path: Path
) -> None:
    from isr.plugin.writer import EsOptions

    # loading into Elasticsearch itself: tests/test_ingest_es.py
    with pytest.raises(InvalidInput, match="pass --sidecar DIR"):
        load_gallery(PrecompSource(world, "train"), "http://localhost:9200/gallery", bundle)
    side = opts(es=EsOptions(sidecar=tmp_path / "side"))
    with pytest.raises(InvalidInput, match="names no Elasticsearch index"):
        load_gallery(PrecompSource(world, "train"), "http://localhost:9200/", bundle, side)
    assert not (tmp_path / "side").exists()


def test_raw_sources_need_a_bundle(world: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="needs a bundle"):
        load_gallery(PrecompSource(world, "train"), str(tmp_path / "idx"), None, opts())
    assert not (tmp_path / "idx").exists()


def test_index_commit_meta_is_committed_with_the_batch(tmp_path: Path) -> None:
    from conftest import random_items

    from isr.plugin.config import IndexConfig

    config = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3)
    with EmbeddedIndex.create(tmp_path / "i", config) as idx:
        idx.add(["a", "b"], random_items(2), None)
        assert idx.commit(meta={"ingest": {"position": 2}}) == 1
        idx.add(["c"], random_items(1, seed=1), None)
        idx.rollback()
        assert idx.commit(meta={"ingest": {"position": 3}}) == 2  # meta alone still commits
        with pytest.raises(InvalidInput, match="not serialisable"):
            idx.commit(meta={"bad": float("nan")})
        assert idx.generation == 2
    with EmbeddedIndex.open(tmp_path / "i", readonly=True) as idx:
        assert idx.committed_meta() == {"ingest": {"position": 3}} and len(idx) == 2


class Picky:
    """A bundle that refuses one caption, as an encoder might refuse an item no check foresaw."""

    def __init__(self, inner: Bundle) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode_texts(self, texts: list[str], batch_size: int = 256):
        if any("boom" in t for t in texts):
            raise InvalidInput("texts: 'boom' is not a word this encoder takes")
        return self.inner.encode_texts(texts, batch_size)


def test_an_item_the_encoder_refuses_is_found_and_skipped(bundle: Bundle, tmp_path: Path) -> None:
    f = tmp_path / "caps.txt"
    f.write_text("a dog\na boom box\na cat\n")
    r = load_gallery(CaptionSource(f), str(tmp_path / "idx"), Picky(bundle), opts())  # type: ignore[arg-type]
    assert r.added == 2 and [(s.id, s.reason) for s in r.skip_examples] == [
        ("1", "encoding failed")
    ]
