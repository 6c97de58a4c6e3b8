"""The facade in Elasticsearch mode, in front of the in-memory fake Elasticsearch (tests/fake_es.py),
for what only the fake shows: the requests and Authorization headers Elasticsearch receives
(one request proxied as one; the client's credentials, or the facade's own behind its keys).
Searches and proxied answers run against the live node: tests/es/test_server_es_live.py."""

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
from isr.plugin.http.server import ServerConfig, create_app

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


def test_other_requests_are_proxied_untouched(setup) -> None:
    """One request in, the same one request out (the searches and answers themselves are
    checked against the live node in tests/es/test_server_es_live.py)."""
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
