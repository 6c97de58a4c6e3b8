"""Query by image: `isr search --image`, `ext.isr.query_image` over HTTP, image -> image on a
photo gallery and image -> text on a caption gallery, through the bundle's own backbone."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fake_es import serve
from ingest_helpers import CAPTIONS
from photo_helpers import photo_gallery, save_vit

from isr.app.cli import main
from isr.app.image_query import ImageQueries
from isr.encoders.bundle import Bundle
from isr.errors import Conflict, InvalidInput
from isr.ingest.captions import CaptionSource
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.loader import IngestOptions, load_gallery
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.http.server import ServerConfig, create_app
from isr.plugin.pipeline import SearchOptions, search


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return photo_gallery(tmp_path_factory.mktemp("photo-gallery"))


@pytest.fixture(scope="module")
def queries(gallery: tuple[Path, Path, Path]) -> ImageQueries:
    return ImageQueries.load(gallery[1])


def test_image_to_image_finds_the_photo_itself(gallery, queries: ImageQueries) -> None:
    root, _, photos = gallery
    q = queries.encode_image_file(photos / "trips" / "b.png")
    with EmbeddedIndex.open(root / "photos", readonly=True) as idx:
        for ablation in ("exhaustive", "full"):
            hits = search(idx, q, SearchOptions.for_ablation(ablation, size=3)).hits
            assert hits[0].id == "trips/b.png", ablation  # its own features: the best max-sim
        # the same file through EXIF rotation and re-encoding is still found by the fast vector
        hits = search(idx, q, SearchOptions.for_ablation("fast", size=1)).hits
        assert hits[0].id == "trips/b.png" and hits[0].fast_score == pytest.approx(1.0, abs=1e-4)


def test_image_to_text_on_a_caption_gallery(gallery, queries: ImageQueries, tmp_path) -> None:
    _, bundle_dir, photos = gallery
    caps = tmp_path / "caps.txt"
    caps.write_text("\n".join(CAPTIONS) + "\n")
    bundle = Bundle.load(bundle_dir)
    load_gallery(CaptionSource(caps), str(tmp_path / "texts"), bundle,
                 IngestOptions(progress=False))  # fmt: skip
    q = queries.encode_image_file(photos / "a.jpg")
    with EmbeddedIndex.open(tmp_path / "texts", readonly=True) as idx:
        full = search(idx, q, SearchOptions.for_ablation("exhaustive", size=4)).hits
        assert len(full) == 4 and all(h.source["text"] in CAPTIONS for h in full)
        # the scores are the image tower's query against the text tower's documents
        d = bundle.encode_texts([h.source["text"] for h in full])

        fast = d.fast @ q.fast[0]
        assert [h.fast_score for h in full] == pytest.approx(fast.tolist(), abs=1e-4)


def test_image_query_errors(gallery, tmp_path: Path) -> None:
    _, bundle_dir, _ = gallery
    q = ImageQueries.load(bundle_dir)
    with pytest.raises(InvalidInput, match="query image: unreadable image"):
        q.encode_image_bytes(b"GIF89a not really")
    with pytest.raises(InvalidInput, match="query image: empty file"):
        q.encode_image_bytes(b"")
    other = save_vit(tmp_path / "other", seed=3)
    with pytest.raises(Conflict, match="this load extracts features with other"):
        ImageQueries(Bundle.load(bundle_dir), ImageBackbone.load(other, k=6))


def test_cli_search_by_image(gallery) -> None:
    root, bundle_dir, photos = gallery
    args = ["search", str(root / "photos"), "--image", str(photos / "a.jpg"), "--bundle",
            str(bundle_dir), "--json", "--ablation", "exhaustive", "--size", "2"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["hits"][0]["id"] == "a.jpg" and out["hits"][0]["source"]["license"] == "cc-by"
    res = CliRunner().invoke(main, [*args[:-1], "0"])  # --size 0: only the total, as over HTTP
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["hits"] == [] and out["total"] == 6
    res = CliRunner().invoke(main, ["search", str(root / "photos"), "--image", "x.jpg"])
    assert res.exit_code != 0 and "needs --bundle DIR" in res.output
    res = CliRunner().invoke(main, ["search", str(root / "photos"), "--text", "a", "--image", "b"])
    assert "exactly one of --query FILE and --text TEXT, or --image FILE" in res.output


@pytest.fixture(scope="module")
def http(gallery, queries: ImageQueries) -> Iterator[httpx.Client]:
    root = gallery[0]
    app = create_app(ServerConfig(root=root), encoder=queries, image_encoder=queries)
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def test_http_query_image(gallery, http: httpx.Client) -> None:
    _, _, photos = gallery
    b64 = base64.b64encode((photos / "trips" / "b.png").read_bytes()).decode()
    for value in (b64, "data:image/png;base64," + b64):
        body = {"size": 2, "ext": {"isr": {"query_image": value, "ablation": "exhaustive"}}}
        r = http.post("/photos/_search", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["hits"]["hits"][0]["_id"] == "trips/b.png"
        assert got["isr"]["encode_ms"] > 0
    f = {"term": {"license": "cc-by"}}
    body = {"size": 5, "query": f, "ext": {"isr": {"query_image": b64, "ablation": "exhaustive"}}}
    ids = {h["_id"] for h in http.post("/photos/_search", json=body).json()["hits"]["hits"]}
    assert ids == {"a.jpg", "anim.gif"}
    for bad, msg in [
        ("@@@", "not valid base64"),
        (12, "non-empty base64 string"),
        ("data:image/png,abc", "must be base64"),
        (base64.b64encode(b"nope").decode(), "query image: unreadable image"),
    ]:
        r = http.post("/photos/_search", json={"ext": {"isr": {"query_image": bad}}})
        assert r.status_code == 400 and msg in r.json()["error"]["reason"], (bad, r.text)
    r = http.post("/photos/_search", json={"ext": {"isr": {"query_image": b64, "query_text": "x"}}})
    assert r.status_code == 400 and "got query_text, query_image" in r.text


def test_http_query_image_without_an_image_encoder(gallery) -> None:
    root, _, photos = gallery
    b64 = base64.b64encode((photos / "a.jpg").read_bytes()).decode()
    with serve(create_app(ServerConfig(root=root))) as url:
        r = httpx.post(url + "/photos/_search", json={"ext": {"isr": {"query_image": b64}}})
    assert r.status_code == 503 and "no image encoder" in r.json()["error"]["reason"]


def test_http_query_image_through_the_apps_bundle_loader(gallery) -> None:
    """`isr serve --bundle B` (the app's AppBundles): the image encoder is built from the
    bundle's recorded backbone on the first image query, once per fingerprint."""
    from isr.app.serve import create_app as app_create_app

    root, bundle, photos = gallery
    b64 = base64.b64encode((photos / "trips" / "b.png").read_bytes()).decode()
    app = app_create_app(ServerConfig(root=root, bundle=bundle))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(2):
            body = {"size": 1, "ext": {"isr": {"query_image": b64, "ablation": "exhaustive"}}}
            r = c.post("/photos/_search", json=body)
            assert r.status_code == 200, r.text
            assert r.json()["hits"]["hits"][0]["_id"] == "trips/b.png"
    assert len(app.state.facade._images) == 1
