"""The synthetic world: layout, determinism, what the features and captions carry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from isr.encoders.vocabulary import KeywordVocab, lemmas_of_text
from isr.errors import Conflict, InvalidInput
from isr.ingest import synthetic_world as sw
from isr.ingest.precomp import PrecompSplit, group_captions

SMALL = {"n_train": 600, "n_dev": 100, "n_test": 50, "m": 16, "D": 64}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("world")
    sw.generate_world(d, seed=5, **SMALL)
    return d


def test_layout_and_world_json(world: Path) -> None:
    names = sorted(p.name for p in world.iterdir())
    assert names == sorted(
        ["world.json"]
        + [f"{s}_{x}" for s in ("train", "dev", "test")
           for x in ("ims.npy", "caps.txt", "objects.npy", "dup_of.npy")]
    )  # fmt: skip
    meta = json.loads((world / "world.json").read_text())
    assert meta["seed"] == 5 and meta["sizes"] == {"train": 600, "dev": 100, "test": 50}
    assert (meta["m"], meta["D"], meta["version"]) == (16, 64, sw.GENERATOR_VERSION)
    assert len(meta["objects"]) == len(sw.OBJECTS) >= 100
    for split, n in meta["sizes"].items():
        sp = PrecompSplit.open(world, split)
        assert (sp.n_images, sp.m, sp.dim, sp.caps_per_image) == (n, 16, 64, 5)
        assert np.isfinite(sp.images).all()
        objs = np.load(world / f"{split}_objects.npy")
        k = (objs[:, :5] >= 0).sum(axis=1)
        assert objs.shape == (n, 6) and k.min() >= 2 and k.max() <= 5


def test_same_seed_same_bytes_other_seed_other_world(tmp_path: Path, world: Path) -> None:
    sw.generate_world(tmp_path / "a", seed=5, **SMALL)
    for p in world.iterdir():
        assert (tmp_path / "a" / p.name).read_bytes() == p.read_bytes(), p.name
    sw.generate_world(tmp_path / "b", seed=6, **SMALL)
    for name in ("train_ims.npy", "train_caps.txt"):
        assert (tmp_path / "b" / name).read_bytes() != (world / name).read_bytes()


def test_regions_show_the_scene_objects(world: Path) -> None:
    t1, _ = sw._prototypes(5, 64)
    na1 = len(sw.ATTRIBUTES) + 1
    p = t1[: len(sw.OBJECTS) * na1 : na1]  # (O, D) plain object and place prototypes
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    x = np.load(world / "train_ims.npy")
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    s = np.einsum("bmd,od->bom", x, p).max(axis=-1)  # (B, O) best region per object
    objs = np.load(world / "train_objects.npy")  # the scene's objects and its place
    hit = tot = 0
    for i in range(len(x)):
        true = set(objs[i][objs[i] >= 0].tolist())
        top = set(np.argsort(-s[i])[: len(true)].tolist())
        hit, tot = hit + len(true & top), tot + len(true)
    assert hit / tot > 0.97  # the best-matching prototypes are the scene's objects


def test_captions_paraphrase_and_mention_the_scene(world: Path) -> None:
    caps = (world / "train_caps.txt").read_text().splitlines()
    objs = np.load(world / "train_objects.npy")[:, :5]
    words = {w for c in caps for w in c.lower().replace(",", " ").replace(".", " ").split()}
    used = [w for _, _, ws in sw.OBJECTS for w in ws if w in words]
    assert len(set(used)) > 1.5 * len({lab for lab, _, _ in sw.OBJECTS if lab in words})
    assert any(sw.plural(w) in words for _, _, ws in sw.OBJECTS for w in ws if sw.plural(w) != w)
    # each caption names at least one of its image's objects, by any of its words
    for i, group in enumerate(group_captions(caps)):
        forms = {f for o in objs[i][objs[i] >= 0] for w in sw.OBJECTS[o][2]
                 for f in (w, sw.plural(w))}  # fmt: skip
        for c in group:
            text = " " + c.lower().replace(",", " ").replace(".", " ") + " "
            assert any(f" {f} " in text for f in forms), (c, forms)
    # not every object in every caption
    assert any(len(objs[i][objs[i] >= 0]) > 2 for i in range(len(objs)))
    assert len(set(caps)) > 0.95 * len(caps)


def test_near_duplicates_differ_in_one_thing(world: Path) -> None:
    dup = np.load(world / "train_dup_of.npy")
    objs = np.load(world / "train_objects.npy")
    caps = group_captions((world / "train_caps.txt").read_text().splitlines())
    d = np.nonzero(dup >= 0)[0]
    assert 0.01 * len(dup) < len(d) < 0.08 * len(dup)
    assert (dup[d] < d).all()
    for i in d:
        j = dup[i]
        assert (objs[i] != objs[j]).sum() <= 1 and caps[i] != caps[j]


def test_world_nouns_lemmatise_back() -> None:
    """Every noun and its plural reads as itself, so the keyword vocabulary sees the world."""
    off = []
    for _, _, ws in sw.OBJECTS:
        for w in ws:
            if w in ("top", "hoodie"):  # "top" is a placement stop word; lemminflect: "hoody"
                continue
            if lemmas_of_text(f"a {w} .") != [w] or lemmas_of_text(f"two {sw.plural(w)}") != [w]:
                off.append(w)
    assert off == []


def test_keyword_vocabulary_of_a_world(world: Path) -> None:
    imgs = group_captions((world / "train_caps.txt").read_text().splitlines())
    v = KeywordVocab.build(imgs, min_images=5)
    labels = {lab for lab, _, _ in sw.OBJECTS}
    assert len(set(v.labels) & labels) > 100
    assert not {"image", "view", "scene", "little", "dripping"} & set(v.labels)


def test_existing_world_and_bad_arguments(tmp_path: Path) -> None:
    sw.generate_world(tmp_path, 20, 0, 0, m=8, D=8)
    assert not list(tmp_path.glob("dev_*")) and not list(tmp_path.glob("*.partial"))
    with pytest.raises(Conflict, match="overwrite"):
        sw.generate_world(tmp_path, 20, 0, 0, m=8, D=8)
    sw.generate_world(tmp_path, 0, 10, 0, m=8, D=8, overwrite=True)
    assert not (tmp_path / "train_ims.npy").exists()
    assert PrecompSplit.open(tmp_path, "dev").n_images == 10
    for kw, msg in (
        ({"n_train": -1}, "n_train"),
        ({"n_train": 0}, "at least one image"),
        ({"m": 4}, "m: expected an integer >= 8"),
        ({"D": 2.5}, "D:"),
        ({"noise": -1.0}, "noise"),
        ({"near_duplicates": 0.9}, r"near_duplicates: expected a number in \[0.0, 0.5\]"),
        ({"seed": -3}, "seed"),
        ({"paraphrase": 1.5}, r"paraphrase: expected a number in \[0.0, 1.0\]"),
    ):
        args = {"n_train": 10, "n_dev": 0, "n_test": 0, "m": 8, "D": 8, "overwrite": True} | kw
        with pytest.raises(InvalidInput, match=msg):
            sw.generate_world(tmp_path / "x", **args)


def test_refuses_a_world_larger_than_the_disk(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="GB free"):
        sw.generate_world(tmp_path, 10**9, 0, 0, m=100, D=4096)
    assert not list(tmp_path.iterdir())


def _object_words(caps: list[str]) -> set[str]:
    words = {w for c in caps for w in c.lower().replace(",", " ").replace(".", " ").split()}
    return {w for _, _, ws in sw.OBJECTS for w in ws if w in words or sw.plural(w) in words}


def test_paraphrase_sets_how_many_synonyms_captions_use(tmp_path: Path, world: Path) -> None:
    """paraphrase 0 names every object by its first word; 1 (the default, the world fixture)
    uses the synonyms; in between, some."""
    kw = SMALL | {"n_train": 300, "n_dev": 0, "n_test": 0}
    got = {}
    for para in (0.0, 0.5):
        sw.generate_world(tmp_path / str(para), seed=5, paraphrase=para, **kw)
        caps = (tmp_path / str(para) / "train_caps.txt").read_text().splitlines()
        got[para] = _object_words(caps)
        meta = json.loads((tmp_path / str(para) / "world.json").read_text())
        assert meta["paraphrase"] == para
    first = {ws[0] for _, _, ws in sw.OBJECTS}
    others = {w for _, _, ws in sw.OBJECTS for w in ws[1:]} - first
    full = _object_words((world / "train_caps.txt").read_text().splitlines()[: 5 * 300])
    assert not got[0.0] & others  # only canonical words
    assert 0 < len(got[0.5] & others) < len(full & others)
    assert json.loads((world / "world.json").read_text())["paraphrase"] == 1.0


def test_world_command_passes_the_difficulty_settings(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from isr.app.cli import main

    args = ["world", str(tmp_path / "w"), "--train", "20", "--dev", "0", "--test", "0",
            "--regions", "8", "--feature-dim", "8", "--noise", "2.5", "--near-duplicates",
            "0.2", "--paraphrase", "0.25"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "w" / "world.json").read_text())
    assert (meta["noise"], meta["near_duplicates"], meta["paraphrase"]) == (2.5, 0.2, 0.25)
    res = CliRunner().invoke(main, [*args[:2], "--overwrite", "--paraphrase", "2"])
    assert res.exit_code != 0 and "paraphrase" in res.output
