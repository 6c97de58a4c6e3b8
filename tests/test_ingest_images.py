"""A folder of photos as a gallery source (tiny random ViT), the --fields join for every source
kind, and bundles that know their eyes (the image backbone they were trained on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from ingest_helpers import tiny_bundle
from photo_helpers import photo_folder, save_vit

from isr.encoders.bundle import Bundle
from isr.encoders.eyes import EYES_FILE, Eyes, check_eyes, eyes_of_dir, read_eyes
from isr.errors import Conflict, InvalidInput
from isr.ingest.fields import WithFields, read_fields
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.images import ImageFolderSource, backbone_for, decode_image, list_images
from isr.ingest.loader import IngestOptions, load_gallery
from isr.ingest.precomp_source import PrecompSource
from isr.ingest.synthetic_world import generate_world
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.pipeline import SearchOptions, search


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_vit(tmp_path_factory.mktemp("vit"))


def opts(**kw) -> IngestOptions:
    return IngestOptions(**{"batch_size": 4, "commit_every": 8, "progress": False, **kw})


def test_walk_decode_and_skip_reasons(vit: Path, tmp_path: Path) -> None:
    root = photo_folder(tmp_path / "photos")
    assert list_images(root) == [
        "a.jpg", "anim.gif", "empty.jpg", "fake.jpg", "tiny.png", "trips/2019/c.webp",
        "trips/2019/d.bmp", "trips/b.png", "trips/rotated.jpg",
    ]  # fmt: skip
    up = decode_image(root / "trips" / "rotated.jpg")
    assert up.size == (20, 40)  # (w, h) after the EXIF rotation
    assert decode_image(root / "tiny.png", 16)[0] == "image too small"

    src = ImageFolderSource(root, ImageBackbone.load(vit, k=6), min_side=16)
    target = str(tmp_path / "idx")
    r = load_gallery(src, target, tiny_bundle(32), opts(batch_size=4))
    assert (r.added, r.skipped, r.complete) == (6, 3, True)
    assert {(s.id, s.reason) for s in r.skip_examples} == {
        ("empty.jpg", "empty file"),
        ("fake.jpg", "unreadable image"),
        ("tiny.png", "image too small"),
    }
    with EmbeddedIndex.open(target, readonly=True) as idx:
        row = idx.rows_of(["trips/rotated.jpg"])["trips/rotated.jpg"]
        got = json.loads(idx.docs_at([row])[row][1])
        st = (root / "trips" / "rotated.jpg").stat()
        assert got == {
            "path": "trips/rotated.jpg", "file_name": "rotated.jpg", "bytes": st.st_size,
            "mtime": int(st.st_mtime), "width": 20, "height": 40,
        }  # fmt: skip
        assert idx.committed_meta()["ingest"]["sources"][0]["source"]["kind"] == "images"
    with pytest.raises(InvalidInput, match="no image files"):
        ImageFolderSource(_empty(tmp_path), src.backbone)


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "nothing"
    d.mkdir()
    (d / "readme.md").write_text("no photos")
    return d


def test_fields_join_makes_user_filters_work(vit: Path, tmp_path: Path) -> None:
    root = photo_folder(tmp_path / "photos")
    csv_file = tmp_path / "meta.csv"
    csv_file.write_text(
        "file_name,license,year\na.jpg,cc-by,2010\nb.png,cc0,2019\nrotated.jpg,cc-by,2021\n"
        "gone.jpg,cc0,2000\n"
    )
    table = read_fields(csv_file)
    assert table.key == "file_name" and table.rows["b.png"] == {"license": "cc0", "year": 2019}
    src = WithFields(ImageFolderSource(root, ImageBackbone.load(vit, k=6)), table)
    assert src.describe()["fields"] == str(csv_file.resolve())
    bundle = tiny_bundle(32)
    target = str(tmp_path / "idx")
    load_gallery(src, target, bundle, opts())
    assert src.unmatched() == 1  # gone.jpg
    q = bundle.encode_texts(["a dog runs on the beach"])
    with EmbeddedIndex.open(target, readonly=True) as idx:
        f = {
            "bool": {"filter": [{"term": {"license": "cc-by"}}, {"range": {"year": {"gte": 2015}}}]}
        }
        hits = search(idx, q, SearchOptions.for_ablation("exhaustive", size=10, filter=f)).hits
        assert [h.id for h in hits] == ["trips/rotated.jpg"]
        assert hits[0].source["license"] == "cc-by" and hits[0].source["width"] == 20


def test_fields_for_precomp_by_id_fix_the_readme_filter(tmp_path: Path) -> None:
    world = tmp_path / "world"
    generate_world(world, n_train=0, n_dev=0, n_test=12, seed=1, m=8, D=16)
    jl = tmp_path / "licenses.jsonl"
    jl.write_text("".join(json.dumps({"id": str(i), "license": ["cc-by", "cc0"][i % 2]}) + "\n"
                          for i in range(12)))  # fmt: skip
    bundle = tiny_bundle(16)
    target = str(tmp_path / "gallery")
    load_gallery(WithFields(PrecompSource(world, "test"), read_fields(jl)), target, bundle, opts())
    q = bundle.encode_texts(["two cats sleep on a red sofa"])
    with EmbeddedIndex.open(target, readonly=True) as idx:
        f = {"bool": {"filter": [{"term": {"license": "cc-by"}}]}}
        hits = search(idx, q, SearchOptions.for_ablation("exhaustive", size=20, filter=f)).hits
        assert sorted(int(h.id) for h in hits) == [0, 2, 4, 6, 8, 10]
        assert all(h.source["captions"] for h in hits)  # the source's own fields are kept


def test_fields_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.csv"
    bad.write_text("name,license\na.jpg,cc0\n")
    with pytest.raises(InvalidInput, match="no key column; name one of id, path"):
        read_fields(bad)
    bad.write_text("path,license\na.jpg,cc0\na.jpg,cc-by\n")
    with pytest.raises(InvalidInput, match=r"line 3: key 'a.jpg' appears twice"):
        read_fields(bad)
    (tmp_path / "m.tsv").write_text("x")
    with pytest.raises(InvalidInput, match=r"expected a .csv or .jsonl"):
        read_fields(tmp_path / "m.tsv")
    jl = tmp_path / "m.jsonl"
    jl.write_text('{"path": "a.jpg"}\n[1]\n')
    with pytest.raises(InvalidInput, match="line 2 is not a JSON object"):
        read_fields(jl)


# -- bundles that know their eyes ---------------------------------------------------------------


def test_bundle_records_its_eyes_and_refuses_other_ones(vit: Path, tmp_path: Path) -> None:
    eyes = eyes_of_dir(vit, k=6, feature_dim=32)
    assert eyes.kind == "hf" and eyes.model_type == "vit" and len(eyes.fingerprint) == 64
    assert eyes.preprocessing["size"] == {"height": 32, "width": 32}
    assert ImageBackbone.load(vit, k=6).eyes == eyes

    plain = tiny_bundle(32)
    plain.save(tmp_path / "plain")
    b = tiny_bundle(32)
    b.eyes = eyes
    b.save(tmp_path / "seeing")
    assert read_eyes(tmp_path / "seeing") == eyes and read_eyes(tmp_path / "plain") is None
    seeing = Bundle.load(tmp_path / "seeing")
    assert seeing.eyes == eyes
    assert seeing.fingerprint != Bundle.load(tmp_path / "plain").fingerprint  # other eyes

    other = save_vit(tmp_path / "other-vit", seed=1)  # same architecture, other weights
    root = photo_folder(tmp_path / "photos")
    src = ImageFolderSource(root, ImageBackbone.load(other, k=6))
    with pytest.raises(
        Conflict, match=r"trained on vit.*this load extracts features with other-vit"
    ):
        load_gallery(src, str(tmp_path / "idx"), seeing, opts())
    assert not (tmp_path / "idx").exists()  # refused before anything was written
    with pytest.raises(Conflict, match=r"k-means 6 regions.*k-means 8 regions"):
        check_eyes(eyes, eyes_of_dir(vit, k=8))
    none = Eyes(kind="none", feature_dim=32)
    with pytest.raises(Conflict, match="precomputed region features"):
        check_eyes(none, eyes)
    check_eyes(None, eyes)  # unknown: only the width is checked

    # the loader finds the backbone (and k) the bundle records
    assert backbone_for(tmp_path / "seeing", None, None) == (Path(eyes.path), 6)
    with pytest.raises(InvalidInput, match="records no image backbone: name the vision model"):
        backbone_for(tmp_path / "plain", None, None)
    (tmp_path / "seeing" / EYES_FILE).write_text("{]")
    with pytest.raises(Exception, match="not valid JSON"):
        Bundle.load(tmp_path / "seeing")


def test_load_images_command_with_fields(vit: Path, tmp_path: Path) -> None:
    from isr.ingest.load_gallery import main

    root = photo_folder(tmp_path / "photos")
    b = tiny_bundle(32)
    b.eyes = eyes_of_dir(vit, k=6, feature_dim=32)
    b.save(tmp_path / "bundle")
    meta = tmp_path / "meta.jsonl"
    meta.write_text('{"path": "trips/b.png", "license": "cc0"}\n')
    args = ["images", str(root), "--bundle", str(tmp_path / "bundle"), "--index",
            str(tmp_path / "idx"), "--fields", str(meta), "--no-progress", "--json"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["added"] == 6 and rep["skipped"] == 3
    assert rep["source"]["kind"] == "images" and rep["source"]["k"] == 6
    with EmbeddedIndex.open(tmp_path / "idx", readonly=True) as idx:
        row = idx.rows_of(["trips/b.png"])["trips/b.png"]
        assert json.loads(idx.docs_at([row])[row][1])["license"] == "cc0"
