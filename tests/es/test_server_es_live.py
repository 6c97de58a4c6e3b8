"""The facade in Elasticsearch mode in front of the live node at $ISR_ES_URL (moved from
tests/test_server_es.py, where the fake stood in): isr searches run on the ES backend and agree
with the in-process pipeline, everything else is proxied and answers what Elasticsearch answers.
What only the fake can show (the requests and headers Elasticsearch receives) stays there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_es import connect, require_es

ES_URL = require_es()

from elasticsearch import Elasticsearch  # noqa: E402
from fake_es import serve  # noqa: E402
from test_server_es import CONFIG, WORLD, _encoded  # noqa: E402

from isr.ingest.encoded_world import encoded_gallery  # noqa: E402
from isr.plugin.es.backend import EsBackend  # noqa: E402
from isr.plugin.es.mapping import EsLayout  # noqa: E402
from isr.plugin.http.queryfile import query_from_json  # noqa: E402
from isr.plugin.http.server import ServerConfig, create_app  # noqa: E402
from isr.plugin.pipeline import SearchOptions, search  # noqa: E402

pytestmark = pytest.mark.es


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, Path]]:
    assert ES_URL is not None
    sidecars = tmp_path_factory.mktemp("sidecars")
    name = f"isr-test-{uuid.uuid4().hex[:10]}"
    client = connect(ES_URL)
    try:
        with EsBackend.create(client, name, CONFIG, EsLayout(replicas=0), sidecars / name) as b:
            for ids, items in encoded_gallery(WORLD, 150):
                b.ingest(ids, items, [{"n": int(d[-4:])} for d in ids])
            b.refresh()
        with serve(create_app(ServerConfig(es_url=ES_URL, sidecar_root=sidecars))) as url:
            yield name, ES_URL, url, sidecars
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
        client.close()


def test_isr_search_runs_on_the_es_backend(setup) -> None:
    name, es_url, url, sidecars = setup
    body = {
        "size": 5,
        "query": {"range": {"n": {"gte": 100}}},
        "ext": {"isr": {"query_encoded": _encoded(0)}},
    }
    r = httpx.post(f"{url}/{name}/_search?search_pipeline=isr", json=body, timeout=120)
    assert r.status_code == 200, r.text
    got = r.json()
    with EsBackend.open(Elasticsearch(es_url), name, sidecars / name) as b:
        want = search(
            b, query_from_json(_encoded(0)), SearchOptions(size=5, filter=[body["query"]])
        )
    assert [h["_id"] for h in got["hits"]["hits"]] == [h.id for h in want.hits]
    assert all(h["_source"]["n"] >= 100 for h in got["hits"]["hits"])
    knn = next(s for s in got["isr"]["stages"] if s["name"] == "knn")
    assert "in Elasticsearch" in knn["detail"]
    assert got["hits"]["total"]["value"] == want.total


def test_other_requests_are_proxied_untouched(setup) -> None:
    name, es_url, url, _ = setup
    q = {"query": {"range": {"n": {"lt": 10}}}}
    direct = httpx.post(f"{es_url}/{name}/_count", json=q, timeout=60)
    via = httpx.post(f"{url}/{name}/_count", json=q, timeout=60,
                     headers={"authorization": "ApiKey client-key"})  # fmt: skip
    assert via.status_code == 200 and via.json() == direct.json()
    assert via.json()["count"] == 10
    # a _search without the pipeline goes to Elasticsearch, errors included
    r = httpx.post(f"{url}/{name}/_search", json={"size": 2, "query": {"match_all": {}}})
    assert r.status_code == 200 and len(r.json()["hits"]["hits"]) == 2
    assert "isr" not in r.json()
    r = httpx.get(f"{url}/{name}-missing/_mapping")
    assert r.status_code == 404 and r.json()["error"]["type"] == "index_not_found_exception"
    ready = httpx.get(f"{url}/_isr/ready", timeout=60)
    assert ready.status_code == 200 and ready.json()["elasticsearch"] == "reachable"


def test_official_client_through_the_facade_first_request_proxied(setup) -> None:
    name, _, url, _ = setup
    via = httpx.get(f"{url}/{name}/_count", timeout=60)
    # one X-Elastic-Product header, whatever case Elasticsearch spells it in
    assert len(via.headers.get_list("x-elastic-product")) == 1, via.headers.raw
    es = Elasticsearch(url, request_timeout=120)  # its product check runs on this first request
    try:
        assert es.count(index=name)["count"] == 300
        hits = es.search(index=name, size=3, ext={"isr": {"query_encoded": _encoded(1)}})
        assert len(hits["hits"]["hits"]) == 3 and "isr" in hits
    finally:
        es.close()
