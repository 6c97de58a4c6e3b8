"""The Elasticsearch backend's rank_vectors layout against an in-memory fake Elasticsearch over
HTTP (tests/fake_es.py), the one layout the live test node cannot run: the integ-test
distribution lacks the rank-vectors and lang-painless modules (tests/es checks that it is refused,
naming them). The fake scores kNN and the max-sim rescore exactly, so its hits must equal the
embedded pipeline's for every ablation. Everything else the backend does runs against the live
node: tests/es/test_es_live_backend.py (which imports this module's world and cases).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from conftest import fill
from elasticsearch import Elasticsearch
from fake_es import FakeEs, fake_es_app, serve

from isr.errors import Conflict
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.es.backend import EsBackend
from isr.plugin.es.mapping import EsLayout
from isr.plugin.pipeline import SearchOptions, search

WORLD = EncodedWorld(
    n_docs=600, d_fast=32, d_frag=16, n_frags=8, n_labels=40, r_i=6, seed=5, query_noise=1.0
)
CONFIG = IndexConfig(d_fast=32, d_frag=16, max_frags=8, r_i=6, codec="fp32", hnsw_m=16)
LICENSES = ("cc-by", "cc0", "cc-by-nc")


def _source(i: int) -> dict:
    return {"license": LICENSES[i % 3], "year": 2000 + i % 20}


@pytest.fixture(scope="module")
def es() -> Iterator[tuple[FakeEs, Elasticsearch]]:
    fake = FakeEs()
    with serve(fake_es_app(fake)) as url:
        client = Elasticsearch(url)
        yield fake, client
        client.close()


def _fill(backend: EsBackend | EmbeddedIndex) -> None:
    fill(backend, WORLD, 300, _source)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedIndex]:
    idx = EmbeddedIndex.create(tmp_path_factory.mktemp("emb") / "world", CONFIG)
    _fill(idx)
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def rv_backend(es) -> Iterator[EsBackend]:
    _, client = es
    b = EsBackend.create(client, "world-rv", CONFIG, EsLayout(fragments="rank_vectors"))
    _fill(b)
    yield b
    b.close()


CASES = [
    ("full", None),
    ("full", {"term": {"license": "cc0"}}),
    ("keywords+fast", None),
    ("fast", {"range": {"year": {"gte": 2005, "lt": 2012}}}),
    ("fast+rerank", None),
]


def _same(a, b, maxsim_rtol: float = 1e-5) -> None:
    assert [h.id for h in a.hits] == [h.id for h in b.hits]
    assert a.total == b.total and a.profile.gallery == b.profile.gallery
    np.testing.assert_allclose(
        [h.fast_score for h in a.hits], [h.fast_score for h in b.hits], atol=1e-5
    )
    if a.hits[0].maxsim_score is not None:
        np.testing.assert_allclose(
            [h.maxsim_score for h in a.hits], [h.maxsim_score for h in b.hits], rtol=maxsim_rtol
        )
    assert [h.keywords_matched for h in a.hits] == [h.keywords_matched for h in b.hits]
    assert [h.source for h in a.hits] == [h.source for h in b.hits]


def test_same_hits_as_the_embedded_pipeline(rv_backend: EsBackend, embedded: EmbeddedIndex) -> None:
    """The rank_vectors layout (reranked inside Elasticsearch); the sidecar layout's run is
    live: tests/es/test_es_live_backend.py."""
    same_ablations_as_embedded(rv_backend, embedded)


def same_ablations_as_embedded(backend: EsBackend, embedded: EmbeddedIndex) -> None:
    """Every ablation of CASES through the graph (exact_threshold 0): the same hits as the
    embedded pipeline, one kNN request, the stages the ablation asks for (also the live
    suite's check of the sidecar layout)."""
    queries, _ = encoded_queries(WORLD, 4, seed=3)
    for ablation, filt in CASES:
        opt = SearchOptions.for_ablation(
            ablation, size=8, rerank_window=40, num_candidates=600, filter=filt, exact_threshold=0
        )
        for i in range(len(queries)):
            got = search(backend, queries[i], opt)
            want = search(embedded, queries[i], opt)
            _same(got, want)
            names = [s.name for s in got.profile.stages]
            assert ("knn" in names) and (("rerank" in names) == opt.use_rerank)
            knn = got.profile.stage("knn")
            assert knn is not None and "1 request(s)" in knn.detail
            if filt is not None:
                assert got.profile.stage("filter").count == want.profile.stage("filter").count


def test_exhaustive_ablations(rv_backend: EsBackend, embedded) -> None:
    q = encoded_queries(WORLD, 1, seed=4)[0]
    opt = SearchOptions.for_ablation("exhaustive", size=6)
    _same(search(rv_backend, q, opt), search(embedded, q, opt))
    kw = SearchOptions.for_ablation(
        "keywords+exhaustive", size=6, filter={"term": {"license": "cc0"}}
    )
    _same(search(rv_backend, q, kw), search(embedded, q, kw))


def test_open_reads_the_layout_back(es, rv_backend: EsBackend) -> None:
    _, client = es
    with EsBackend.open(client, "world-rv") as b:
        assert b.layout.fragments == "rank_vectors" and b.sidecar is None
    with pytest.raises(Conflict, match="already exists"):
        EsBackend.create(client, "world-rv", CONFIG, EsLayout(fragments="rank_vectors"))
