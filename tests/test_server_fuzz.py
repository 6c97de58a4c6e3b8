"""The facade under hostile and generated input: every client fault is a 4xx in
Elasticsearch's error shape, no request does unbounded work, a 500 keeps the connection."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_encoder import FakeEncoder
from starlette.testclient import TestClient

from isr.ingest.encoded_world import EncodedWorld, encoded_gallery, encoded_queries
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.http.server import ServerConfig, create_app, scrub_paths

WORLD = EncodedWorld(n_docs=400, d_fast=16, d_frag=8, n_frags=4, n_labels=12, r_i=3, seed=3)
CONFIG = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, hnsw_m=8, hnsw_ef_construction=40)
N_FUZZ = 5000
FUZZ_BUDGET_S = 240.0


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    with EmbeddedIndex.create(root / "g", CONFIG) as idx:
        for ids, items in encoded_gallery(WORLD, 200):
            idx.add(ids, items, [{"license": "cc0", "year": 2000 + i % 9} for i in range(len(ids))])
            idx.commit()
    return root


@pytest.fixture(scope="module")
def client(root: Path) -> Iterator[TestClient]:
    config = ServerConfig(root=root, allowed_hosts=("testserver",), refresh_interval=-1)
    app = create_app(config, encoder=FakeEncoder(CONFIG.d_fast, CONFIG.d_frag, CONFIG.max_frags))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _query() -> dict[str, Any]:
    q = encoded_queries(WORLD, 1)[0]
    return {
        "fast": q.fast[0].tolist(),
        "fragments": q.fragments[0].tolist(),
        "keywords": list(q.keywords[0].labels),
    }


def _es_error(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert body["status"] == status and body["error"]["type"] and body["error"]["reason"]
    return body


def _nested_bool(depth: int) -> dict[str, Any]:
    q: dict[str, Any] = {"term": {"license": "cc0"}}
    for _ in range(depth):
        q = {"bool": {"filter": [q]}}
    return q


def test_the_reported_500s_are_4xx(client: TestClient) -> None:
    enc = _query()
    isr = "/g/_search?search_pipeline=isr"
    for kw in (5, [1, 2], {"labels": 7}, {"labels": ["a"], "probs": ["x"]}, [None]):
        body = {"ext": {"isr": {"query_encoded": {**enc, "keywords": kw}}}}
        _es_error(client.post(isr, json=body), 400)
    _es_error(client.post("/_isr/rerank", json={"query": ["a", "b"], "documents": ["x"]}), 400)
    body = {"query": _nested_bool(300), "ext": {"isr": {"query_encoded": enc}}}
    assert "max_nested_depth" in _es_error(client.post(isr, json=body), 400)["error"]["reason"]
    _es_error(client.post("/g/_search", json={"query": _nested_bool(31)}), 400)
    assert client.post("/g/_search", json={"query": _nested_bool(29)}).status_code == 200
    wide = {"bool": {"should": [{"term": {"license": str(i)}} for i in range(5000)]}}
    assert (
        "max_clause_count"
        in _es_error(client.post("/g/_search", json={"query": wide}), 400)["error"]["reason"]
    )
    many = {"terms": {"license": [str(i) for i in range(70_000)]}}
    assert (
        "max_terms_count"
        in _es_error(client.post("/g/_search", json={"query": many}), 400)["error"]["reason"]
    )
    frags = {**enc, "fragments": [enc["fragments"][0]] * 2000}
    _es_error(client.post(isr, json={"ext": {"isr": {"query_encoded": frags}}}), 400)
    texts = ["x" * 10_000] * 30
    _es_error(client.post("/_isr/embed", json={"input": texts}), 400)
    _es_error(client.post("/_isr/rerank", json={"query": "q", "documents": texts}), 400)
    r = _es_error(client.post("/g/_search", json={"size": 9_000, "from": 1_001}), 400)
    assert "max_result_window" in r["error"]["reason"]


def test_security_posture(client: TestClient, root: Path) -> None:
    r = client.post("/g/_search", content=b"{}", headers={"content-type": "text/plain"})
    _es_error(r, 415)
    form = {"content-type": "application/x-www-form-urlencoded"}
    _es_error(client.post("/g/_search", content=b"{}", headers=form), 415)
    ok = client.post("/g/_search", content=b"{}", headers={"content-type": "application/json"})
    assert ok.status_code == 200
    _es_error(client.get("/g/_search", headers={"host": "evil.example:9280"}), 400)
    assert client.get("/_isr/health", headers={"host": "127.0.0.1:9280"}).status_code == 200
    assert client.get("/_isr/health", headers={"host": "[::1]:9280"}).status_code == 200
    assert client.get("/_isr/health", headers={"host": "localhost"}).status_code == 200
    assert str(root) not in scrub_paths(f"{root}/g/fast.f32: bytes [0, 64) fail")
    assert scrub_paths(f"{root}/g/fast.f32: bad") == "g/fast.f32: bad"
    key = create_app(ServerConfig(root=root, api_key="k", allowed_hosts=("testserver",)))
    with TestClient(key) as c:
        r = c.get("/g/_search")
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'ApiKey realm="isr"'


def test_non_loopback_bind_without_a_key_is_refused(root: Path) -> None:
    from isr.errors import InvalidInput
    from isr.plugin.http.server import check_exposure

    with pytest.raises(InvalidInput, match="--insecure"):
        check_exposure(ServerConfig(root=root, host="0.0.0.0"))
    check_exposure(ServerConfig(root=root, host="0.0.0.0", insecure=True))  # warns
    check_exposure(ServerConfig(root=root, host="0.0.0.0", api_key="k"))


def test_a_500_leaves_the_connection_usable(client: TestClient, monkeypatch: Any) -> None:
    from isr.plugin.http import server

    def boom(*a: Any, **k: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(server.Facade, "plain_search", boom)
    r = client.post("/g/_search", json={})
    body = _es_error(r, 500)
    assert "RuntimeError" in body["error"]["reason"]
    monkeypatch.undo()
    assert client.post("/g/_search", json={}).status_code == 200


def test_timeout_is_honoured(client: TestClient, monkeypatch: Any) -> None:
    from isr.plugin.http import server

    real = server.Facade.plain_search

    def slow(self: Any, *a: Any) -> Any:
        time.sleep(1.0)
        return real(self, *a)

    monkeypatch.setattr(server.Facade, "plain_search", slow)
    t = time.perf_counter()
    r = client.post("/g/_search?timeout=100ms", json={})
    assert r.status_code == 200 and r.json()["timed_out"] is True
    assert time.perf_counter() - t < 0.9
    _es_error(client.post("/g/_search?timeout=soon", json={}), 400)


# -- generated requests ------------------------------------------------------------------

JUNK: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, -(2**70), 1e308, -0.0, 0.5, "", "x", "-1", "1s",
    "a" * 300, [], [1], ["a"], [[1, 2]], {}, {"a": 1}, {"bool": {}}, [None] * 5, "\u0000",
    "\ud7ff", {"term": {}}, {"range": {"year": {"gte": "x"}}}, [{"match_all": {}}] * 3,
]  # fmt: skip


def _mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    if depth > 6 or rng.random() < 0.25:
        return rng.choice(JUNK)
    if isinstance(value, dict) and value:
        out = dict(value)
        key = rng.choice(list(out))
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.3:
            out[rng.choice(["x", "size", "from", "query", "ext", "isr", "timeout"])] = rng.choice(
                JUNK
            )
        else:
            out[key] = _mutate(out[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value:
        out_l = list(value)
        i = rng.randrange(len(out_l))
        if rng.random() < 0.2:
            out_l = out_l * rng.choice([0, 2, 50])
        else:
            out_l[i] = _mutate(out_l[i], rng, depth + 1)
        return out_l
    return rng.choice(JUNK)


def _templates() -> list[tuple[str, str, Any]]:
    enc = _query()
    f = {"bool": {"filter": [{"term": {"license": "cc0"}}, {"range": {"year": {"gte": 2003}}}]}}
    return [
        ("POST", "/g/_search?search_pipeline=isr", {"size": 5, "query": f, "ext": {"isr": {
            "query_encoded": enc, "num_candidates": 50, "rerank_window": 20,
            "keywords": {"r_t": 2, "mode": "any"}, "ablation": "full"}}}),
        ("POST", "/g/_search?search_pipeline=isr", {"ext": {"isr": {"query_text": "a dog"}}}),
        ("POST", "/g/_search", {"size": 3, "from": 1, "query": f, "_source": True}),
        ("POST", "/_isr/rerank", {"query": "a dog", "documents": ["a", "b"], "top_n": 1}),
        ("POST", "/_isr/rerank/g", {"query": "a dog", "documents": ["doc-0000001"]}),
        ("POST", "/_isr/embed", {"input": ["a red sofa"], "input_type": "search"}),
        ("POST", "/g/_refresh", None),
        ("GET", "/_isr/ready/g", None),
    ]  # fmt: skip


def test_generated_requests_never_5xx(client: TestClient) -> None:
    rng = random.Random(14)
    templates = _templates()
    counts: dict[int, int] = {}
    slowest = 0.0
    t_end = time.monotonic() + FUZZ_BUDGET_S
    n = 0
    while n < N_FUZZ and time.monotonic() < t_end:
        method, url, body = rng.choice(templates)
        roll = rng.random()
        headers = {"content-type": "application/json"}
        if roll < 0.05:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif roll < 0.1:
            url = url.replace("/g/", rng.choice(["/G/", "/_x/", "/nope/", "/../", "/g%2F/"]), 1)
            raw = json.dumps(body).encode() if body is not None else b""
        elif roll < 0.15 and "?" in url:
            url += rng.choice(["&size=x", "&timeout=-5", "&from=-1", "&_source=maybe", "&zz=1"])
            raw = json.dumps(body).encode() if body is not None else b""
        else:
            raw = json.dumps(_mutate(body, rng)).encode() if body is not None else b""
        t = time.process_time()
        r = client.request(method, url, content=raw, headers=headers)
        slowest = max(slowest, time.process_time() - t)
        counts[r.status_code] = counts.get(r.status_code, 0) + 1
        assert r.status_code < 500, (url, raw[:300], r.text[:300])
        n += 1
    print(f"fuzz: {n} requests, statuses {sorted(counts.items())}, slowest {slowest:.3f} s CPU")
    assert n >= N_FUZZ, f"only {n} requests within {FUZZ_BUDGET_S} s"
    assert slowest < 1.0
