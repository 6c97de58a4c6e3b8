"""Elasticsearch's read APIs on the embedded facade (`_count`, `_doc`, `_mget`, `GET /{index}`,
`_mapping`, `_cat/indices`), through the official client where it has a call for them, and the
photo endpoint of the search page with its path checks."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elasticsearch import Elasticsearch, NotFoundError
from fake_es import serve
from photo_helpers import photo_gallery

from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.http.read_api import human_bytes
from isr.plugin.http.server import ServerConfig, create_app

PHOTOS = ["a.jpg", "anim.gif", "trips/2019/c.webp", "trips/2019/d.bmp", "trips/b.png",
          "trips/rotated.jpg"]  # fmt: skip


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return photo_gallery(tmp_path_factory.mktemp("read-api"))


@pytest.fixture(scope="module")
def url(gallery) -> Iterator[str]:
    with serve(create_app(ServerConfig(root=gallery[0]))) as u:
        yield u


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


def test_count_with_and_without_a_query(http: httpx.Client, url: str) -> None:
    assert http.get("/photos/_count").json() == {"count": 6, "_shards": {"total": 1,
            "successful": 1, "skipped": 0, "failed": 0}}  # fmt: skip
    q = {"query": {"bool": {"filter": [{"term": {"license": "cc-by"}}]}}}
    assert http.post("/photos/_count", json=q).json()["count"] == 2
    q = {"query": {"range": {"width": {"gte": 30}}}}
    assert http.post("/photos/_count", json=q).json()["count"] == 4  # a, anim, c, d
    es = Elasticsearch(url)
    assert es.count(index="photos", query={"term": {"license": "cc0"}})["count"] == 1
    r = http.post("/photos/_count", json={"query": {"term": {"colour": "red"}}})
    assert r.status_code == 400 and "unknown filter field 'colour'" in r.text
    r = http.post("/photos/_count", json={"size": 3})
    assert r.status_code == 400 and "unsupported key(s) ['size']" in r.text
    assert http.get("/nope/_count").status_code == 404


def test_get_head_and_mget(http: httpx.Client, url: str, gallery) -> None:
    got = http.get("/photos/_doc/trips%2Fb.png").json()
    assert got["found"] and got["_id"] == "trips/b.png" and got["_version"] == 1
    assert got["_source"]["license"] == "cc0" and got["_source"]["file_name"] == "b.png"
    r = http.get("/photos/_doc/nope.jpg")
    assert r.status_code == 404 and r.json() == {"_index": "photos", "_id": "nope.jpg",
                                                  "found": False}  # fmt: skip
    assert http.head("/photos/_doc/a.jpg").status_code == 200
    assert http.head("/photos/_doc/zzz").status_code == 404
    es = Elasticsearch(url)
    assert es.get(index="photos", id="a.jpg")["_source"]["license"] == "cc-by"
    assert es.exists(index="photos", id="a.jpg") and not es.exists(index="photos", id="b")
    with pytest.raises(NotFoundError):
        es.get(index="photos", id="missing")
    docs = es.mget(index="photos", ids=["a.jpg", "missing", "anim.gif"])["docs"]
    assert [d["found"] for d in docs] == [True, False, True]
    docs = http.post("/_mget", json={"docs": [{"_index": "photos", "_id": "trips/b.png"}]}).json()
    assert docs["docs"][0]["_source"]["path"] == "trips/b.png"
    r = http.post("/_mget", json={"ids": ["a.jpg"]})
    assert r.status_code == 400 and "need an index in the URL" in r.text
    r = http.post("/photos/_mget", json={"ids": [1]})
    assert r.status_code == 400 and "non-empty string" in r.text


def test_index_mapping_and_cat(http: httpx.Client, url: str, gallery) -> None:
    got = http.get("/photos").json()["photos"]
    props = got["mappings"]["properties"]
    assert props["license"] == {"type": "keyword"} and props["width"] == {"type": "long"}
    assert got["mappings"]["_meta"]["isr"]["d_frag"] == 8
    assert got["settings"]["index"]["number_of_shards"] == "1"
    assert http.get("/photos/_mapping").json()["photos"]["mappings"]["properties"] == props
    assert list(http.get("/_mapping").json()) == ["photos"]
    assert http.head("/photos").status_code == 200 and http.head("/nope").status_code == 404
    assert http.get("/nope").status_code == 404
    es = Elasticsearch(url)
    assert es.indices.get_mapping(index="photos")["photos"]["mappings"]["properties"] == props
    assert es.indices.exists(index="photos")

    with EmbeddedIndex.open(gallery[0] / "photos", readonly=True) as idx:
        size = human_bytes(idx.stats()["bytes_total"])
    rows = http.get("/_cat/indices?format=json").json()
    assert rows == [{"health": "green", "status": "open", "index": "photos",
                     "uuid": rows[0]["uuid"], "pri": "1", "rep": "0", "docs.count": "6",
                     "docs.deleted": "0", "store.size": size, "pri.store.size": size}]  # fmt: skip
    text = http.get("/_cat/indices?v").text.splitlines()
    assert text[0].split() == ["health", "status", "index", "uuid", "pri", "rep", "docs.count",
                               "docs.deleted", "store.size", "pri.store.size"]  # fmt: skip
    assert text[1].split()[:3] == ["green", "open", "photos"] and len(text) == 2
    assert http.get("/_cat/indices/photos?h=index,docs.count").text == "photos 6\n"
    assert es.cat.indices(format="json")[0]["docs.count"] == "6"
    r = http.get("/_cat/indices?h=index,colour")
    assert r.status_code == 400 and "unknown column(s) ['colour']" in r.text
    assert human_bytes(532) == "532b" and human_bytes(5300) == "5.2kb"


def test_photo_endpoint_and_its_path_checks(http: httpx.Client, gallery, tmp_path) -> None:
    photos = gallery[2]
    r = http.get("/_isr/file/photos/trips/b.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == (photos / "trips" / "b.png").read_bytes()
    r = http.get("/_isr/file/photos/trips/rotated.jpg?w=64")

    from PIL import Image

    im = Image.open(io.BytesIO(r.content))
    assert r.headers["content-type"] == "image/jpeg" and im.size == (20, 40)  # upright
    # only documents of the index, only inside its folder
    (photos / "secret.txt").write_text("no")
    for path in ["/_isr/file/photos/secret.txt", "/_isr/file/photos/..%2F..%2Fetc%2Fpasswd",
                 "/_isr/file/photos/%2Fetc%2Fpasswd", "/_isr/file/photos/fake.jpg"]:  # fmt: skip
        r = http.get(path)
        assert r.status_code == 404 and "no document" in r.text, (path, r.text)
    assert http.get("/_isr/file/photos/a.jpg?w=5").status_code == 400
    assert http.get("/_isr/file/photos/a.jpg?x=1").status_code == 400
    # a photo swapped for a link that points out of the folder is refused
    target = photos / "trips" / "2019" / "d.bmp"
    outside = tmp_path / "outside.bmp"
    outside.write_bytes(target.read_bytes())
    saved = target.read_bytes()
    target.unlink()
    os.symlink(outside, target)
    try:
        r = http.get("/_isr/file/photos/trips/2019/d.bmp")
        assert r.status_code == 404 and "not in the index's image folder" in r.text
    finally:
        target.unlink()
        target.write_bytes(saved)


def test_the_page_is_served_to_browsers(http: httpx.Client) -> None:
    r = http.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<title>isr search</title>" in r.text
    assert http.get("/_isr/ui").text == r.text
    banner = http.get("/", headers={"accept": "application/json"}).json()
    assert banner["tagline"] == "You Know, for Search"


def test_the_page_is_open_the_data_is_not(gallery) -> None:
    with serve(create_app(ServerConfig(root=gallery[0], api_key="k3y"))) as url:
        assert httpx.get(url + "/_isr/ui").status_code == 200
        assert httpx.get(url + "/_isr/file/photos/a.jpg").status_code == 401
        assert httpx.get(url + "/photos/_count").status_code == 401
        ok = httpx.get(url + "/photos/_count", headers={"authorization": "ApiKey k3y"})
        assert ok.json()["count"] == 6
