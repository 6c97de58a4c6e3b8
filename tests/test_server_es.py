"""The facade in Elasticsearch mode, in front of the in-memory fake Elasticsearch (tests/fake_es.py):
isr searches run on the ES backend, everything else is proxied untouched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elasticsearch import Elasticsearch
from fake_es import FakeEs, fake_es_app, serve

from isr.ingest.encoded_world import EncodedWorld, encoded_gallery, encoded_queries
from isr.plugin.config import IndexConfig
from isr.plugin.es.backend import EsBackend
from isr.plugin.es.mapping import EsLayout
from isr.plugin.http.queryfile import query_from_json
from isr.plugin.http.server import ServerConfig, create_app
from isr.plugin.pipeline import SearchOptions, search

WORLD = EncodedWorld(n_docs=300, d_fast=32, d_frag=16, n_frags=8, n_labels=30, r_i=6, seed=11)
CONFIG = IndexConfig(d_fast=32, d_frag=16, max_frags=8, r_i=6, codec="fp16")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeEs, str, str, Path]]:
    fake = FakeEs()
    sidecars = tmp_path_factory.mktemp("sidecars")
    with serve(fake_es_app(fake)) as es_url:
        client = Elasticsearch(es_url)
        with EsBackend.create(client, "photos", CONFIG, EsLayout(), sidecars / "photos") as b:
            for ids, items in encoded_gallery(WORLD, 150):
                b.ingest(ids, items, [{"n": int(d[-4:])} for d in ids])
            b.refresh()
        config = ServerConfig(es_url=es_url, sidecar_root=sidecars, es_api_key="facade-key")
        with serve(create_app(config)) as url:
            yield fake, es_url, url, sidecars
        client.close()


def _encoded(i: int) -> dict:
    q = encoded_queries(WORLD, i + 1, seed=4)[0][i]
    return {
        "fast": q.fast[0].tolist(),
        "fragments": q.fragments[0].tolist(),
        "keywords": list(q.keywords[0].labels),
    }


def test_isr_search_runs_on_the_es_backend(setup) -> None:
    _, es_url, url, sidecars = setup
    body = {
        "size": 5,
        "query": {"range": {"n": {"gte": 100}}},
        "ext": {"isr": {"query_encoded": _encoded(0)}},
    }
    r = httpx.post(f"{url}/photos/_search?search_pipeline=isr", json=body, timeout=60)
    assert r.status_code == 200, r.text
    got = r.json()
    with EsBackend.open(Elasticsearch(es_url), "photos", sidecars / "photos") as b:
        want = search(
            b, query_from_json(_encoded(0)), SearchOptions(size=5, filter=[body["query"]])
        )
    assert [h["_id"] for h in got["hits"]["hits"]] == [h.id for h in want.hits]
    assert all(h["_source"]["n"] >= 100 for h in got["hits"]["hits"])
    knn = next(s for s in got["isr"]["stages"] if s["name"] == "knn")
    assert "in Elasticsearch" in knn["detail"]
    assert got["hits"]["total"]["value"] == want.total


def test_other_requests_are_proxied_untouched(setup) -> None:
    fake, es_url, url, _ = setup
    direct = httpx.post(f"{es_url}/photos/_count", json={"query": {"range": {"n": {"lt": 10}}}})
    before = len(fake.requests)
    via = httpx.post(
        f"{url}/photos/_count",
        json={"query": {"range": {"n": {"lt": 10}}}},
        headers={"authorization": "ApiKey client-key"},
    )
    assert via.status_code == 200 and via.json() == direct.json() == {"count": 10}
    assert fake.requests[before:] == [("POST", "/photos/_count")]
    # a _search without the pipeline goes to Elasticsearch, errors included
    r = httpx.post(f"{url}/photos/_search", json={"size": 2, "query": {"match_all": {}}})
    assert r.status_code == 200 and len(r.json()["hits"]["hits"]) == 2
    assert "isr" not in r.json()
    r = httpx.get(f"{url}/missing/_mapping")
    assert r.status_code == 404 and r.json()["error"]["type"] == "index_not_found_exception"
    # the official client through the facade: product check, pipeline via ext.isr, proxying
    es = Elasticsearch(url)
    assert es.count(index="photos")["count"] == 300
    hits = es.search(index="photos", size=3, ext={"isr": {"query_encoded": _encoded(1)}})
    assert len(hits["hits"]["hits"]) == 3 and "isr" in hits
    es.close()
    ready = httpx.get(f"{url}/_isr/ready")
    assert ready.status_code == 200 and ready.json()["elasticsearch"] == "reachable"


def test_proxy_credentials(setup) -> None:
    fake, es_url, url, sidecars = setup
    # no API key on the facade: the client's credentials reach Elasticsearch untouched
    httpx.get(f"{url}/photos/_count", headers={"authorization": "ApiKey client-key"})
    assert fake.auth[-1] == "ApiKey client-key"
    # the facade checks keys: it is the trust boundary and sends its own credentials
    config = ServerConfig(
        es_url=es_url, sidecar_root=sidecars, api_key="k1", es_api_key="facade-key"
    )
    with serve(create_app(config)) as guarded:
        assert httpx.get(f"{guarded}/photos/_count").status_code == 401
        n = len(fake.auth)
        r = httpx.get(f"{guarded}/photos/_count", headers={"authorization": "ApiKey k1"})
        assert r.status_code == 200 and fake.auth[n:] == ["ApiKey facade-key"]
