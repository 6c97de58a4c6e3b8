"""The HTTP facade end to end over HTTP, embedded mode: uvicorn in a thread on a free port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import elasticsearch
import httpx
import numpy as np
import pytest
from elasticsearch import Elasticsearch
from fake_encoder import FakeEncoder
from fake_es import serve

from isr.app.serve import create_app  # the engine's, with the app's bundle loader
from isr.encoders.record import Encoded
from isr.ingest.encoded_world import EncodedWorld, encoded_gallery, encoded_queries
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.http.queryfile import query_from_json
from isr.plugin.http.server import ServerConfig
from isr.plugin.pipeline import KeywordOptions, SearchOptions, search

WORLD = EncodedWorld(
    n_docs=1500, d_fast=32, d_frag=16, n_frags=8, n_labels=40, r_i=6, seed=7, query_noise=1.0
)
CONFIG = IndexConfig(d_fast=32, d_frag=16, max_frags=8, r_i=6, hnsw_m=16, hnsw_ef_construction=80)
LICENSES = ("cc-by", "cc0", "cc-by-nc")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("indices")
    with EmbeddedIndex.create(root / "gallery", CONFIG) as idx:
        start = 0
        for ids, items in encoded_gallery(WORLD, 500):
            srcs = [
                {"license": LICENSES[(start + j) % 3], "year": 2000 + (start + j) % 20}
                for j in range(len(ids))
            ]
            idx.add(ids, items, srcs)
            idx.commit()
            start += len(ids)
        idx.delete(["doc-0000003"])
        idx.commit()
    (root / "not-an-index").mkdir()
    return root


@pytest.fixture(scope="module")
def index(root: Path) -> Iterator[EmbeddedIndex]:
    with EmbeddedIndex.open(root / "gallery", readonly=True) as idx:
        yield idx


@pytest.fixture(scope="module")
def encoder() -> FakeEncoder:
    return FakeEncoder(CONFIG.d_fast, CONFIG.d_frag, CONFIG.max_frags)


@pytest.fixture(scope="module")
def url(root: Path, encoder: FakeEncoder) -> Iterator[str]:
    with serve(create_app(ServerConfig(root=root, max_body_bytes=2**20), encoder=encoder)) as u:
        yield u


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


def _encoded(q: Encoded) -> dict:
    return {
        "fast": q.fast[0].tolist(),
        "fragments": q.fragments[0].tolist(),
        "keywords": list(q.keywords[0].labels),
    }


def _assert_es_error(r: httpx.Response, status: int, es_type: str, reason: str = "") -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["error"]["type"] == es_type
    assert body["error"]["root_cause"][0]["type"] == es_type
    assert reason in body["error"]["reason"], body["error"]["reason"]
    assert r.headers["x-elastic-product"] == "Elasticsearch"
    return body


def test_isr_search_matches_the_in_process_pipeline(http: httpx.Client, index) -> None:
    queries, _ = encoded_queries(WORLD, 3, seed=2)
    filt = {"bool": {"filter": [{"term": {"license": "cc0"}}]}}
    for i in range(len(queries)):
        body = {
            "size": 5,
            "query": filt,
            "ext": {
                "isr": {
                    "query_encoded": _encoded(queries[i]),
                    "num_candidates": 500,
                    "rerank_window": 100,
                    "keywords": {"r_t": 3, "mode": "any"},
                    "explain": True,
                }
            },
        }
        r = http.post("/gallery/_search?search_pipeline=isr", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        opt = SearchOptions(
            size=5, num_candidates=500, rerank_window=100, keywords=KeywordOptions(3), filter=[filt]
        )
        want = search(index, query_from_json(body["ext"]["isr"]["query_encoded"]), opt)
        assert set(got) == {"took", "timed_out", "_shards", "hits", "isr"}
        assert got["timed_out"] is False and got["_shards"]["failed"] == 0
        assert got["hits"]["total"] == {"value": want.total, "relation": "eq"}
        hits = got["hits"]["hits"]
        assert [h["_id"] for h in hits] == [h.id for h in want.hits]
        assert [h["_score"] for h in hits] == [h.score for h in want.hits]
        assert got["hits"]["max_score"] == hits[0]["_score"]
        for h, w in zip(hits, want.hits):
            assert h["_index"] == "gallery" and h["_source"] == w.source
            assert h["_source"]["license"] == "cc0"
            assert h["_isr"] == {
                "keywords_matched": list(w.keywords_matched),
                "fast_score": w.fast_score,
                "maxsim_score": w.maxsim_score,
            }
            assert h["_explanation"]["value"] == h["_score"]
        prof = got["isr"]
        assert [s["name"] for s in prof["stages"]] == [
            "filter",
            "keywords",
            "knn",
            "rerank",
            "fetch",
        ]
        assert prof["gallery"] == len(index) and prof["ablation"] == "full"
        assert prof["query_keywords"] == list(queries[i].keywords[0].top(3))


def test_query_text_from_paging_and_ablations(http: httpx.Client, index, encoder) -> None:
    text = "concept0001 concept0002 on a beach"
    base = {"ext": {"isr": {"query_text": text, "ablation": "fast+rerank"}}}
    r = http.post("/gallery/_search", params={"search_pipeline": "isr", "size": 8}, json=base)
    assert r.status_code == 200, r.text
    want = search(
        index,
        encoder.encode_texts([text]),
        SearchOptions.for_ablation("fast+rerank", size=8, rerank_window=200, num_candidates=1000),
    )
    ids = [h["_id"] for h in r.json()["hits"]["hits"]]
    assert ids == [h.id for h in want.hits]
    assert r.json()["isr"]["encode_ms"] > 0 and r.json()["isr"]["ablation"] == "fast+rerank"
    page = http.post(
        "/gallery/_search?search_pipeline=isr", json={**base, "from": 3, "size": 5}
    ).json()
    assert [h["_id"] for h in page["hits"]["hits"]] == ids[3:8]
    # GET with a body, _source off, total as an integer, size 0
    r = http.request(
        "GET",
        "/gallery/_search?search_pipeline=isr&rest_total_hits_as_int=true",
        content=json.dumps({**base, "size": 0, "_source": False}),
    )
    assert r.status_code == 200, r.text
    assert r.json()["hits"]["hits"] == [] and isinstance(r.json()["hits"]["total"], int)
    r = http.post(
        "/gallery/_search?search_pipeline=isr",
        json={"size": 3, "_source": False, **base},
    )
    assert all("_source" not in h for h in r.json()["hits"]["hits"])


def test_plain_search_without_the_pipeline(http: httpx.Client, index) -> None:
    r = http.post("/gallery/_search", json={"size": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["hits"]["total"]["value"] == len(index) == WORLD.n_docs - 1
    assert [h["_id"] for h in body["hits"]["hits"]] == ["doc-0000000", "doc-0000001", "doc-0000002"]
    assert body["hits"]["max_score"] == 1.0 and "isr" not in body
    r = http.post(
        "/gallery/_search",
        json={
            "from": 1,
            "size": 2,
            "query": {"bool": {"filter": [{"term": {"license": "cc0"}}]}},
            "post_filter": {"range": {"year": {"lt": 2005}}},
        },
    )
    hits = r.json()["hits"]["hits"]
    assert [h["_score"] for h in hits] == [0.0, 0.0]
    assert all(h["_source"]["license"] == "cc0" and h["_source"]["year"] < 2005 for h in hits)
    n = sum(1 for i in range(WORLD.n_docs) if i % 3 == 1 and i % 20 < 5 and i != 3)
    assert r.json()["hits"]["total"]["value"] == n
    _assert_es_error(
        http.post("/gallery/_search", json={"query": {"match": {"title": "dog"}}}),
        400,
        "illegal_argument_exception",
        "query: unsupported filter clause 'match'",
    )
    _assert_es_error(
        http.post("/gallery/_search", json={"aggs": {}}), 400, "illegal_argument_exception", "aggs"
    )


@pytest.mark.parametrize(
    ("path", "content", "status", "es_type", "reason"),
    [
        ("/nope/_search?search_pipeline=isr", b"{}", 404, "index_not_found_exception", "nope"),
        ("/Bad/_search", b"{}", 400, "illegal_argument_exception", "invalid index name"),
        ("/not-an-index/_search", b"{}", 404, "index_not_found_exception", "not-an-index"),
        ("/gallery/_search", b'{"size": ', 400, "x_content_parse_exception", "not valid JSON"),
        ("/gallery/_search", b'{"size": NaN}', 400, "x_content_parse_exception", "not valid"),
        ("/gallery/_search", b'{"q": "\xff\xfe"}', 400, "x_content_parse_exception", "UTF-8"),
        ("/gallery/_search", b"[1, 2]", 400, "illegal_argument_exception", "JSON object"),
        ("/gallery/_search?size=x", b"{}", 400, "illegal_argument_exception", "size must be"),
        ("/gallery/_search?q=dog", b"{}", 400, "illegal_argument_exception", "unrecognized"),
        ("/gallery/_search?search_pipeline=x", b"{}", 400, "illegal_argument_exception", "unknown"),
        ("/gallery/_doc/1", b"", 400, "illegal_argument_exception", "no handler found"),
    ],
)
def test_malformed_requests_get_es_errors(
    http: httpx.Client, path: str, content: bytes, status: int, es_type: str, reason: str
) -> None:
    _assert_es_error(http.post(path, content=content), status, es_type, reason)


def test_bad_pipeline_options_and_limits(http: httpx.Client) -> None:
    q = _encoded(encoded_queries(WORLD, 1)[0])

    def isr(**ext: object) -> dict:
        return {"ext": {"isr": {"query_encoded": q, **ext}}}

    cases = [
        ({**isr(), "size": 10_001}, "size must be an integer in [0, 10000]"),
        (isr(num_candidates=20_000), "num_candidates must be in [1, 10000]"),
        (isr(rerank_window=5, num_candidates=5), "rerank_window (5) must be >= size (10)"),
        (isr(ablation="magic"), "ext.isr.ablation 'magic'"),
        (isr(colour="red"), "unsupported key(s) ['colour']"),
        (isr(keywords={"mode": "most"}), "keywords.mode 'most'"),
        (isr(keywords={"alpha": -1}), "ext.isr.keywords.alpha must be a number in [0.0, 10.0]"),
        (isr(keywords={"r_i": 99}), "keywords.r_i must be an integer in [1, "),
        ({"ext": {"isr": {}}}, "exactly one of query_text and query_encoded"),
        (isr(query_text="x"), "exactly one of"),
        (
            isr(query_encoded={"fast": [1.0] * 8, "fragments": [[1.0] * 16]}),
            "8 dims, the index has 32",
        ),
        (
            isr(query_encoded={"fast": [1.0] * 32, "fragments": [[1.0] * 4]}),
            "fragments have 4 dims",
        ),
        (isr(query_encoded={"fast": "x", "fragments": [[1.0]]}), "vectors must be arrays"),
        (isr(query_encoded={"fast": [0.0] * 32, "fragments": [[1.0] * 16]}), "zero norm"),
        ({**isr(), "query": {"match": {"t": "x"}}}, "unsupported filter clause 'match'"),
        ({**isr(), "query": {"term": {"colour": "red"}}}, "unknown filter field 'colour'"),
        ({**isr(), "_source": ["a"]}, "_source: only true or false"),
    ]
    for body, reason in cases:
        r = http.post("/gallery/_search?search_pipeline=isr", json=body)
        _assert_es_error(r, 400, "illegal_argument_exception", reason)
    big = b'{"size": 1, "pad": "' + b"x" * (2**20) + b'"}'
    _assert_es_error(http.post("/gallery/_search", content=big), 413, "content_too_long_exception")

    def chunks() -> Iterator[bytes]:  # no content-length: the streamed body is counted
        yield b'{"pad": "'
        for _ in range(40):
            yield b"y" * 32_768
        yield b'"}'

    r = http.post("/gallery/_search", content=chunks())
    _assert_es_error(r, 413, "content_too_long_exception", "exceeds the limit")
    assert http.get("/_isr/health").json() == {"status": "up"}  # still serving


def test_official_client_against_the_facade(url: str, index) -> None:
    q = encoded_queries(WORLD, 1, seed=9)[0]
    es = Elasticsearch(url)
    assert es.info()["tagline"] == "You Know, for Search"
    # the 9.x client has no search_pipeline argument: ext.isr selects the pipeline ...
    resp = es.search(index="gallery", size=4, ext={"isr": {"query_encoded": _encoded(q)}})
    want = search(index, query_from_json(_encoded(q)), SearchOptions(size=4))
    assert [h["_id"] for h in resp["hits"]["hits"]] == [h.id for h in want.hits]
    assert resp["hits"]["hits"][0]["_isr"]["maxsim_score"] == want.hits[0].maxsim_score
    # ... and perform_request sends the URL parameter
    raw = es.perform_request(
        "POST",
        "/gallery/_search",
        params={"search_pipeline": "isr"},
        headers={"content-type": "application/json", "accept": "application/json"},
        body={"size": 4, "ext": {"isr": {"query_encoded": _encoded(q)}}},
    )
    assert [h["_id"] for h in raw["hits"]["hits"]] == [h.id for h in want.hits]
    plain = es.search(index="gallery", size=2, query={"term": {"license": "cc-by"}})
    assert plain["hits"]["total"]["value"] == 499  # 500 cc-by, doc-0000003 deleted
    assert plain["hits"]["max_score"] == 0.0
    with pytest.raises(elasticsearch.NotFoundError) as e:
        es.search(index="nope", ext={"isr": {"query_encoded": _encoded(q)}})
    assert e.value.error == "index_not_found_exception"
    with pytest.raises(elasticsearch.BadRequestError) as e:
        es.search(index="gallery", size=20_000, ext={"isr": {"query_encoded": _encoded(q)}})
    assert "size must be" in str(e.value.info)
    es.close()


def test_rerank_embed_and_readiness(http: httpx.Client, index, encoder: FakeEncoder) -> None:
    texts = ["a dog on a beach", "a red car", "dog beach frisbee"]
    r = http.post("/_isr/embed", json={"input": texts})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    np.testing.assert_allclose(
        [d["embedding"] for d in data], encoder.encode_texts(texts).fast, atol=1e-6
    )
    docs = ["a red car", "dog on a beach", "a cat"]
    r = http.post("/_isr/rerank", json={"query": "dog beach", "documents": docs, "top_n": 2})
    res = r.json()["results"]
    assert len(res) == 2 and res[0]["index"] == 1
    assert res[0]["relevance_score"] == pytest.approx(1.0)  # both query words match exactly
    assert 0 <= res[1]["relevance_score"] < 1.0
    # by id: the index's stored fragments against the query's
    ids = ["doc-0000010", "doc-0000500", "no-such-doc", "doc-0000011"]
    r = http.post(
        "/_isr/rerank/gallery", json={"query": "concept0003 concept0007", "documents": ids}
    )
    res = r.json()["results"]
    q = encoder.encode_texts(["concept0003 concept0007"])
    rows = index.rows_of(ids)
    frags, mask = index.fragments.gather(np.array([rows[d] for d in ids if d in rows]))
    ms = index.scorer.score(q.fragments[0], q.mask[0], frags, mask)
    n = int(q.mask[0].sum())
    known = [i for i, d in enumerate(ids) if d in rows]
    want = {i: (s + n) / (2 * n) for i, s in zip(known, ms.tolist())}
    want[2] = 0.0
    assert [x["index"] for x in res] == sorted(want, key=lambda i: -want[i])
    for x in res:
        assert x["relevance_score"] == pytest.approx(want[x["index"]], abs=1e-6)
    _assert_es_error(
        http.post("/_isr/rerank", json={"query": "x", "documents": []}),
        400,
        "illegal_argument_exception",
        "rerank.documents",
    )
    ready = http.get("/_isr/ready")
    assert ready.status_code == 200 and ready.json()["indices"] == {"gallery": len(index)}


def test_api_key_and_no_encoder(root: Path) -> None:
    app = create_app(ServerConfig(root=root, api_key="s3cret"))
    with serve(app) as url, httpx.Client(base_url=url) as c:
        assert c.get("/_isr/health").status_code == 200
        r = c.post("/gallery/_search", json={})
        body = _assert_es_error(r, 401, "security_exception", "API key")
        assert body["error"]["reason"] and "ApiKey" in r.headers["www-authenticate"]
        _assert_es_error(
            c.post("/gallery/_search", json={}, headers={"Authorization": "ApiKey nope"}),
            401,
            "security_exception",
        )
        ok = c.post(
            "/gallery/_search", json={"size": 1}, headers={"Authorization": "ApiKey s3cret"}
        )
        assert ok.status_code == 200
        es = Elasticsearch(url, api_key="s3cret")
        assert es.search(index="gallery", size=1)["hits"]["total"]["value"] == WORLD.n_docs - 1
        es.close()
        r = c.post(
            "/gallery/_search?search_pipeline=isr",
            json={"ext": {"isr": {"query_text": "a dog"}}},
            headers={"Authorization": "ApiKey s3cret"},
        )
        _assert_es_error(r, 503, "status_exception", "--bundle")


def test_bundle_fingerprint_is_checked(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    config = IndexConfig(d_fast=32, d_frag=16, max_frags=8, r_i=6, bundle_fingerprint="a" * 64)
    small = EncodedWorld(n_docs=50, d_fast=32, d_frag=16, n_frags=8, n_labels=10, r_i=6)
    with EmbeddedIndex.create(root / "fp", config) as idx:
        for ids, items in encoded_gallery(small, 50):
            idx.add(ids, items)
        idx.commit()
    enc = FakeEncoder(32, 16, 8)
    enc.fingerprint = "b" * 64
    with serve(create_app(ServerConfig(root=root), encoder=enc)) as url:
        body = {"ext": {"isr": {"query_text": "concept0001"}}}
        r = httpx.post(f"{url}/fp/_search?search_pipeline=isr", json=body)
        _assert_es_error(r, 409, "status_exception", "bundle aaaaaaaaaaaa")
        enc.fingerprint = "a" * 64
        r = httpx.post(f"{url}/fp/_search?search_pipeline=isr", json=body)
        assert r.status_code == 200 and len(r.json()["hits"]["hits"]) == 10


def test_real_bundle_loaded_lazily(tmp_path: Path) -> None:
    """`--bundle`: loaded on the first query_text, its fingerprint matching the index's."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's few cores are shared: small ops prefer one thread
    try:
        _real_bundle_case(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _real_bundle_case(tmp_path: Path) -> None:
    import torch

    from isr.encoders.bundle import Bundle
    from isr.encoders.config import BundleConfig, EncoderConfig
    from isr.encoders.model import DualEncoder
    from isr.encoders.tokenizer import train_tokenizer
    from isr.encoders.vocabulary import KeywordVocab

    captions = ["a dog runs on the beach", "two cats sleep on a red sofa", "a man rides a bike"]
    tok = train_tokenizer(captions, 60)
    base_cfg = EncoderConfig(
        type="base", vocab_size=len(tok), image_in_dim=12, hidden=16, heads=2, intermediate=32,
        layers=1, dim=8, n_labels=4,
    )  # fmt: skip
    fast_cfg = base_cfg.replace(type="fast", dim=6, n_labels=0)
    torch.manual_seed(0)
    vocab = KeywordVocab(labels=("dog", "cat", "man", "bike"), min_images=1, counts=(3, 2, 2, 1))
    bundle = Bundle(
        BundleConfig(base=base_cfg, fast=fast_cfg),
        DualEncoder(base_cfg),
        DualEncoder(fast_cfg),
        tok,
        vocab,
    )
    bundle.save(tmp_path / "bundle")
    items = bundle.encode_texts(captions)
    root = tmp_path / "root"
    root.mkdir()
    config = IndexConfig(
        d_fast=6, d_frag=8, max_frags=items.n_frags, r_i=4, bundle_fingerprint=bundle.fingerprint
    )
    with EmbeddedIndex.create(root / "texts", config) as idx:
        idx.add(["c0", "c1", "c2"], items)
        idx.commit()
    app = create_app(ServerConfig(root=root, bundle=tmp_path / "bundle"))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/_isr/ready").json()["encoder"] == "lazy"
        body = {
            "size": 3,
            "ext": {"isr": {"query_text": "a dog on the beach", "ablation": "fast+rerank"}},
        }
        r = c.post("/texts/_search?search_pipeline=isr", json=body)
        assert r.status_code == 200, r.text
        assert {h["_id"] for h in r.json()["hits"]["hits"]} == {"c0", "c1", "c2"}
        assert c.get("/_isr/ready").json()["encoder"] == "loaded"
        emb = c.post("/_isr/embed", json={"input": ["a red sofa"]}).json()["data"][0]["embedding"]
        assert len(emb) == 6 and abs(np.linalg.norm(emb) - 1) < 1e-5
