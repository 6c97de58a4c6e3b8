"""A photo gallery in Elasticsearch (the in-memory fake): the facade in ES mode serves its
thumbnails (folder from the ingest record beside the fragments, `_source.path` from
Elasticsearch, the same path checks) and encodes `query_text` with the bundle the index
records (no --bundle)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
import torch
from fake_es import FakeEs, fake_es_app, serve
from photo_helpers import photo_bundle

from isr.app.serve import create_app
from isr.ingest.fields import WithFields, read_fields
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.images import ImageFolderSource
from isr.ingest.loader import IngestOptions, load_gallery
from isr.plugin import EsOptions
from isr.plugin.http.server import ServerConfig


def test_es_photo_gallery_thumbnails_and_recorded_bundle(tmp_path: Path) -> None:
    from PIL import Image

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    fake = FakeEs()
    try:
        vit, photos, b = photo_bundle(tmp_path)
        meta = tmp_path / "meta.jsonl"
        meta.write_text(json.dumps({"path": "a.jpg", "license": "cc-by"}) + "\n")
        src = WithFields(ImageFolderSource(photos, ImageBackbone.load(vit, k=6)), read_fields(meta))
        sidecars = tmp_path / "sidecars"
        with serve(fake_es_app(fake)) as es_url:
            opt = IngestOptions(
                batch_size=4, progress=False, es=EsOptions(sidecar=sidecars / "photos"),
                bundle_path=str((tmp_path / "bundle").resolve()),
            )  # fmt: skip
            r = load_gallery(src, f"{es_url}/photos", b, opt)
            assert r.documents == 6
            config = ServerConfig(es_url=es_url, sidecar_root=sidecars)  # no --bundle
            with serve(create_app(config)) as url, httpx.Client(base_url=url, timeout=60) as c:
                got = c.get("/_isr/file/photos/trips/b.png")
                assert got.status_code == 200, got.text
                assert got.content == (photos / "trips" / "b.png").read_bytes()
                thumb = c.get("/_isr/file/photos/trips/rotated.jpg?w=32")
                assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
                with Image.open(io.BytesIO(thumb.content)) as im:
                    assert im.size == (20, 40)  # upright (EXIF applied), stored 40 x 20
                for bad, status in [
                    ("/_isr/file/photos/no-such.jpg", 404),
                    ("/_isr/file/photos/fake.jpg", 404),  # skipped by the load: not a document
                    ("/_isr/file/photos/..%2F..%2Fetc%2Fpasswd", 404),
                ]:
                    assert c.get(bad).status_code == status, bad
                # the index records its bundle: query_text without --bundle
                body = {"size": 3, "ext": {"isr": {"query_text": "a dog runs on the beach"}}}
                s = c.post("/photos/_search?search_pipeline=isr", json=body)
                assert s.status_code == 200, s.text
                hits = s.json()["hits"]["hits"]
                assert len(hits) == 3 and all("path" in h["_source"] for h in hits)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("rel", ["../outside.jpg", "/etc/passwd.jpg", "notes.txt"])
def test_es_document_paths_are_checked(tmp_path: Path, rel: str) -> None:
    from isr.errors import InvalidInput
    from isr.plugin.http.ui import _checked

    (tmp_path / "outside.jpg").write_bytes(b"x")
    folder = tmp_path / "photos"
    folder.mkdir()
    with pytest.raises(InvalidInput):
        _checked(rel, "d", [folder])
