"""The Elasticsearch backend against an in-memory fake Elasticsearch over HTTP (tests/fake_es.py).

The fake scores kNN exactly, so the backend's hits must equal the embedded pipeline's (which
is exact too on this small gallery) for every ablation, in both fragment layouts.
What a healthy live node covers moved to tests/es/test_es_live_backend.py (filtered and exact
kNN hits, the relaxed screen, check's drift repair); what stays here: faults a healthy node
won't produce (429s, bulk item failures), the rank_vectors layout (the test node lacks its
modules), and the unfiltered kNN's exact hits (the fake scores exactly; HNSW does not).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import fill
from elasticsearch import Elasticsearch
from fake_es import FakeEs, fake_es_app, serve

from isr.errors import Conflict, InvalidInput, NotFound
from isr.ingest.encoded_world import EncodedWorld, encoded_gallery, encoded_queries
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.es.backend import BulkIngestError, EsBackend
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
def side_backend(es, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsBackend]:
    _, client = es
    path = tmp_path_factory.mktemp("side") / "world"
    b = EsBackend.create(client, "world-side", CONFIG, EsLayout(), sidecar_path=path)
    _fill(b)
    yield b
    b.close()


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


@pytest.mark.parametrize("layout", ["sidecar", "rank_vectors"])
def test_same_hits_as_the_embedded_pipeline(layout: str, request, embedded: EmbeddedIndex) -> None:
    backend = request.getfixturevalue("side_backend" if layout == "sidecar" else "rv_backend")
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


def test_exhaustive_ablations(side_backend: EsBackend, rv_backend: EsBackend, embedded) -> None:
    q = encoded_queries(WORLD, 1, seed=4)[0]
    opt = SearchOptions.for_ablation("exhaustive", size=6)
    want = search(embedded, q, opt)
    _same(search(side_backend, q, opt), want)
    _same(search(rv_backend, q, opt), want)
    kw = SearchOptions.for_ablation(
        "keywords+exhaustive", size=6, filter={"term": {"license": "cc0"}}
    )
    _same(search(rv_backend, q, kw), search(embedded, q, kw))
    with pytest.raises(InvalidInput, match="exhaustive max-sim with filters or keywords"):
        search(side_backend, q, kw)


def test_ingest_retries_429_and_raises_failed_items(es, tmp_path: Path) -> None:
    fake, client = es
    b = EsBackend.create(client, "ingest", CONFIG, EsLayout(), sidecar_path=tmp_path / "side")
    ids, items = next(encoded_gallery(WORLD, 50))
    fake.fail_429.update(ids[3:6])
    assert b.ingest(ids, items, refresh=True, initial_backoff=0.01) == 50
    assert len(b) == 50 and not fake.fail_429
    fake.fail_400.update(["new-1"])
    more = items[:3]
    with pytest.raises(BulkIngestError, match="1 of 3 documents failed") as err:
        b.ingest(["new-0", "new-1", ids[0]], more, refresh=True)
    assert err.value.failed[0]["index"]["_id"] == "new-1"
    assert b.sidecar is not None and "new-1" not in b.sidecar.rows_of(["new-1", "new-0"])
    with pytest.raises(InvalidInput, match="dims"):
        b.ingest(["z"], encoded_queries(EncodedWorld(n_docs=5, d_fast=8, d_frag=16), 1)[0])
    with pytest.raises(InvalidInput, match="'isr' is reserved"):
        b.ingest(["z"], items[:1], [{"isr": 1}])
    assert b.delete(["new-0", "missing"], refresh=True) == 1
    assert len(b) == 50
    b.close()


def test_open_reads_the_layout_back(es, side_backend: EsBackend, rv_backend: EsBackend) -> None:
    _, client = es
    assert side_backend.sidecar is not None
    with EsBackend.open(client, "world-side", side_backend.sidecar.path) as b:
        assert b.config == CONFIG and b.layout == EsLayout() and b.sidecar.readonly
    with EsBackend.open(client, "world-rv") as b:
        assert b.layout.fragments == "rank_vectors" and b.sidecar is None
    with pytest.raises(InvalidInput, match="give its path"):
        EsBackend.open(client, "world-side")
    with pytest.raises(NotFound, match="no such index"):
        EsBackend.open(client, "nothing-here")
    with pytest.raises(Conflict, match="already exists"):
        EsBackend.create(client, "world-rv", CONFIG, EsLayout(fragments="rank_vectors"))


def test_cli_create_load_check_and_serve_arguments(es, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from isr.app.cli import main

    fake, client = es
    node = client.transport.node_pool.get().config
    url = f"http://{node.host}:{node.port}"
    side = tmp_path / "side"
    run = CliRunner().invoke
    r = run(
        main,
        [
            "es",
            "create",
            "cli-idx",
            "--es-url",
            url,
            "--d-fast",
            "32",
            "--d-frag",
            "16",
            "--max-frags",
            "8",
            "--r-i",
            "6",
            "--sidecar",
            str(side),
        ],
    )
    assert r.exit_code == 0, r.output
    r = run(
        main,
        [
            "es",
            "load-synthetic",
            "cli-idx",
            "--es-url",
            url,
            "--sidecar",
            str(side),
            "--docs",
            "40",
        ],
    )
    assert r.exit_code == 0 and "indexed 40 documents" in r.output, r.output
    del fake.indices["cli-idx"]["docs"]["doc-0000007"]
    client.indices.refresh(index="cli-idx")
    r = run(main, ["check", "cli-idx", "--es-url", url, "--sidecar", str(side)])
    report = json.loads(r.output)
    assert report["orphan_fragments_ids"] == ["doc-0000007"] and not report["consistent"]
    r = run(main, ["check", "cli-idx", "--es-url", url, "--sidecar", str(side), "--repair"])
    assert json.loads(r.output)["deleted_orphans"] == 1
    r = run(main, ["check", "cli-idx", "--es-url", url, "--sidecar", str(side)])
    assert json.loads(r.output)["consistent"] is True
    r = run(main, ["serve", "--root", str(tmp_path), "--es-url", url])
    assert (
        r.exit_code != 0
        and "exactly one of --root DIR (embedded indexes) and --es-url URL" in r.output
    )
