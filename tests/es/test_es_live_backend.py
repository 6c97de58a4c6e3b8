"""EsBackend paths against the live node at $ISR_ES_URL (moved from tests/test_es_backend.py,
where a fake stood in): exact hits of the filtered kNN (every filter goes through Lucene's
exact path: num_candidates covers the admitted documents), every ablation's hits on a float
HNSW index (unfiltered included), the exact fallback of a selective filter, the relaxed keyword
screen, `check` finding and repairing drift, label shares and the keyword cost rule, bulk item
failures (a real mapping error), reading the layout back, and the `isr es` / `isr check`
command lines."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import live_es
import pytest

ES_URL = live_es.require_es()
client = live_es.client  # the shared fixture (pytest finds it by name)

from conftest import fill  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402
from test_es_backend import (  # noqa: E402
    CASES,
    CONFIG,
    WORLD,
    _same,
    _source,
    same_ablations_as_embedded,
)

from isr.errors import Conflict, InvalidInput, NotFound  # noqa: E402
from isr.ingest.encoded_world import EncodedWorld, encoded_gallery, encoded_queries  # noqa: E402
from isr.plugin.embedded.index import EmbeddedIndex  # noqa: E402
from isr.plugin.es.backend import BulkIngestError, EsBackend  # noqa: E402
from isr.plugin.es.mapping import EsLayout  # noqa: E402
from isr.plugin.pipeline import SearchOptions, search  # noqa: E402

pytestmark = pytest.mark.es


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedIndex]:
    idx = EmbeddedIndex.create(tmp_path_factory.mktemp("emb") / "world", CONFIG)
    fill(idx, WORLD, 300, _source)
    yield idx
    idx.close()


def _name() -> str:
    return f"isr-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def side_backend(
    client: Elasticsearch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EsBackend]:
    name = _name()
    b = EsBackend.create(client, name, CONFIG, EsLayout(replicas=0),
                         sidecar_path=tmp_path_factory.mktemp("side") / name)  # fmt: skip
    try:
        fill(b, WORLD, 300, _source)
        yield b
    finally:
        b.close()
        client.indices.delete(index=name, ignore_unavailable=True)


def test_filtered_knn_gives_the_embedded_hits(
    side_backend: EsBackend, embedded: EmbeddedIndex
) -> None:
    queries, _ = encoded_queries(WORLD, 4, seed=3)
    for ablation, filt in CASES:
        opt = SearchOptions.for_ablation(ablation, size=8, rerank_window=40,
                                         num_candidates=600, filter=filt)  # fmt: skip
        if opt.filter is None and not opt.use_keywords:
            continue  # no filter: HNSW, approximate on a real node (the fake is exact)
        for i in range(len(queries)):
            got, want = search(side_backend, queries[i], opt), search(embedded, queries[i], opt)
            _same(got, want)
            if filt is not None:
                assert got.profile.stage("filter").count == want.profile.stage("filter").count


def test_selective_filter_goes_exact_and_sparse_screen_relaxes(
    side_backend: EsBackend, embedded: EmbeddedIndex
) -> None:
    q = encoded_queries(WORLD, 1, seed=5)[0]
    filt = {"bool": {"filter": [{"term": {"year": 2003}}, {"term": {"license": "cc-by"}}]}}
    opt = SearchOptions(
        size=5, rerank_window=20, num_candidates=50, filter=filt, exact_threshold=100
    )
    got, want = search(side_backend, q, opt), search(embedded, q, opt)
    _same(got, want)
    assert got.profile.stage("knn").detail.startswith("exact in Elasticsearch, 2 request(s)")
    # a label nobody carries: the screen admits 0 < size documents and is dropped
    odd = q.__class__(q.fast, q.fragments, q.mask, (q.keywords[0].__class__(("nobody",), (1.0,)),))
    opt = SearchOptions(size=5, rerank_window=20, num_candidates=50, exact_threshold=0)
    got, want = search(side_backend, odd, opt), search(embedded, odd, opt)
    assert got.profile.relaxed and got.profile.relax_reason == want.profile.relax_reason
    assert got.profile.stage("keywords").count == 600


def test_check_finds_and_repairs_drift(client: Elasticsearch, tmp_path: Path) -> None:
    name = _name()
    b = EsBackend.create(client, name, CONFIG, EsLayout(replicas=0), sidecar_path=tmp_path / "s")
    try:
        ids, items = next(encoded_gallery(WORLD, 30))
        b.ingest(ids, items, refresh=True)
        assert b.check().consistent
        # documents Elasticsearch lost, and documents whose fragments the sidecar lost
        for d in ids[:2]:
            client.delete(index=name, id=d)
        b.refresh()
        assert b.sidecar is not None
        b.sidecar.delete([ids[2]])
        b.sidecar.commit()
        report = b.check()
        assert report.orphan_fragments == (ids[0], ids[1])
        assert report.missing_fragments == (ids[2],)
        assert (report.es_documents, report.fragment_documents) == (28, 29)
        q = encoded_queries(WORLD, 1)[0]
        opt = SearchOptions(size=5, rerank_window=30, num_candidates=30, use_keywords=False)
        res = search(b, q, opt)
        assert "have no fragments in the sidecar" in res.profile.stage("knn").detail
        fixed = b.check(repair=True, delete_missing=True)
        assert (fixed.deleted_orphans, fixed.deleted_missing) == (2, 1)
        b.refresh()
        assert b.check().consistent and len(b) == 27
    finally:
        b.close()
        client.indices.delete(index=name, ignore_unavailable=True)


def test_label_shares_match_embedded_and_the_cost_rule_runs(
    side_backend: EsBackend, embedded: EmbeddedIndex
) -> None:
    """label_shares on Elasticsearch (a terms aggregation) equals the embedded index's, so the
    keyword "cost" rule and stop labels pick the same labels and hits on both backends."""
    from isr.plugin.pipeline import KeywordOptions

    vocab = sorted(embedded._terms.values())
    assert len(vocab) > 10
    want = embedded.label_shares([*vocab, "nobody"])
    got = side_backend.label_shares([*vocab, "nobody"])
    assert got.keys() == want.keys() and "nobody" not in got
    for w in vocab:
        assert got[w] == pytest.approx(want[w], abs=1e-12), w
    assert side_backend.label_shares([]) == {}
    assert side_backend.label_shares(vocab[:3], r_i=CONFIG.r_i) == {w: want[w] for w in vocab[:3]}
    with pytest.raises(InvalidInput, match=r"keywords\.r_i 2"):
        side_backend.label_shares(vocab, r_i=2)  # the keyword set is unordered in ES
    queries, _ = encoded_queries(WORLD, 6, seed=9)
    kw = KeywordOptions(rule="cost", alpha=1.0, stop=0.2, r_t=2)
    opt = SearchOptions(size=8, rerank_window=40, num_candidates=600, keywords=kw)
    for i in range(len(queries)):
        q = queries[i]
        assert kw.select(q.keywords[0], side_backend) == kw.select(q.keywords[0], embedded)
        _same(search(side_backend, q, opt), search(embedded, q, opt))
    with pytest.raises(InvalidInput, match=r"keywords\.r_i 2"):
        search(side_backend, queries[0], SearchOptions(keywords=KeywordOptions(r_i=2)))


def test_label_shares_are_cached_until_a_refresh(client: Elasticsearch, tmp_path: Path) -> None:
    name = _name()
    b = EsBackend.create(client, name, CONFIG, EsLayout(replicas=0), sidecar_path=tmp_path / "s")

    def hits() -> int:
        st = client.indices.stats(index=name, metric="request_cache")
        return int(st["_all"]["total"]["request_cache"]["hit_count"])

    try:
        gallery = encoded_gallery(WORLD, 40)
        ids, items = next(gallery)
        b.ingest(ids, items, refresh=True)
        labels = sorted({w for k in items.keywords for w in k.top(CONFIG.r_i)})
        first = b.label_shares(labels)
        h = hits()
        assert b.label_shares(labels) == first and hits() == h + 1  # answered from the cache
        ids2, items2 = next(gallery)
        b.ingest(ids2, items2, refresh=False)
        assert b.label_shares(labels) == first  # not refreshed: the same (cached) counts
        b.refresh()
        now = b.label_shares(labels)
        both = [*items.keywords, *items2.keywords]
        for w in labels:
            n = sum(w in k.top(CONFIG.r_i) for k in both)
            assert now[w] == pytest.approx(n / 80), w
    finally:
        b.close()
        client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def hnsw_backend(
    client: Elasticsearch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EsBackend]:
    """Float HNSW: kNN scores are the exact dot products, and num_candidates (600) covers the
    gallery, so Lucene's search finds the exact top k, as the embedded index does here."""
    name = _name()
    b = EsBackend.create(client, name, CONFIG, EsLayout(vector_index="hnsw", replicas=0),
                         sidecar_path=tmp_path_factory.mktemp("side") / name)  # fmt: skip
    try:
        fill(b, WORLD, 300, _source)
        yield b
    finally:
        b.close()
        client.indices.delete(index=name, ignore_unavailable=True)


def test_same_hits_as_the_embedded_pipeline(
    hnsw_backend: EsBackend, embedded: EmbeddedIndex
) -> None:
    """Every ablation through the graph (exact_threshold 0), unfiltered included (moved from
    the fake, which scored exactly; here num_candidates covers the gallery)."""
    same_ablations_as_embedded(hnsw_backend, embedded)


def test_exhaustive_ablation_on_the_sidecar(side_backend: EsBackend, embedded) -> None:
    q = encoded_queries(WORLD, 1, seed=4)[0]
    opt = SearchOptions.for_ablation("exhaustive", size=6)
    _same(search(side_backend, q, opt), search(embedded, q, opt))
    kw = SearchOptions.for_ablation(
        "keywords+exhaustive", size=6, filter={"term": {"license": "cc0"}}
    )
    with pytest.raises(InvalidInput, match="exhaustive max-sim with filters or keywords"):
        search(side_backend, q, kw)


def test_ingest_raises_failed_items_and_checks_batches(
    client: Elasticsearch, tmp_path: Path
) -> None:
    """A document Elasticsearch refuses (a real mapping error: `year` is a long) fails alone,
    named, and its new fragments leave the sidecar. (429s: tests/es/test_es_429.py.)"""
    name = _name()
    b = EsBackend.create(client, name, CONFIG, EsLayout(replicas=0), sidecar_path=tmp_path / "s")
    try:
        ids, items = next(encoded_gallery(WORLD, 50))
        assert b.ingest(ids, items, [_source(i) for i in range(50)], refresh=True) == 50
        assert len(b) == 50
        more = items[:3]
        srcs = [_source(0), {"year": "not a year"}, _source(2)]
        with pytest.raises(BulkIngestError, match="1 of 3 documents failed") as err:
            b.ingest(["new-0", "new-1", ids[0]], more, srcs, refresh=True)
        assert err.value.failed[0]["index"]["_id"] == "new-1"
        assert b.sidecar is not None and "new-1" not in b.sidecar.rows_of(["new-1", "new-0"])
        with pytest.raises(InvalidInput, match="dims"):
            b.ingest(["z"], encoded_queries(EncodedWorld(n_docs=5, d_fast=8, d_frag=16), 1)[0])
        with pytest.raises(InvalidInput, match="'isr' is reserved"):
            b.ingest(["z"], items[:1], [{"isr": 1}])
        assert b.delete(["new-0", "missing"], refresh=True) == 1
        assert len(b) == 50
    finally:
        b.close()
        client.indices.delete(index=name, ignore_unavailable=True)


def test_open_reads_the_layout_back(client: Elasticsearch, side_backend: EsBackend) -> None:
    assert side_backend.sidecar is not None
    with EsBackend.open(client, side_backend.index, side_backend.sidecar.path) as b:
        assert b.config == CONFIG and b.layout == EsLayout(replicas=0) and b.sidecar.readonly
    with pytest.raises(InvalidInput, match="give its path"):
        EsBackend.open(client, side_backend.index)
    with pytest.raises(NotFound, match="no such index"):
        EsBackend.open(client, _name())
    with pytest.raises(Conflict, match="already exists"):
        EsBackend.create(client, side_backend.index, CONFIG, EsLayout(), "/nonexistent/x")


def test_cli_create_load_check_arguments(client: Elasticsearch, tmp_path: Path) -> None:
    """`isr es create`, `isr es load-synthetic` and `isr check` against the node."""
    import json

    from click.testing import CliRunner

    from isr.app.cli import main

    assert ES_URL is not None
    name, side = _name(), tmp_path / "side"
    run = CliRunner().invoke
    try:
        r = run(main, ["es", "create", name, "--es-url", ES_URL, "--d-fast", "32", "--d-frag",
                       "16", "--max-frags", "8", "--r-i", "6", "--sidecar", str(side)])  # fmt: skip
        assert r.exit_code == 0, r.output
        args = ["es", "load-synthetic", name, "--es-url", ES_URL, "--sidecar", str(side)]
        r = run(main, [*args, "--docs", "40"])
        assert r.exit_code == 0 and "indexed 40 documents" in r.output, r.output
        client.delete(index=name, id="doc-0000007", refresh=True)
        check = ["check", name, "--es-url", ES_URL, "--sidecar", str(side)]
        report = json.loads(run(main, check).output)
        assert report["orphan_fragments_ids"] == ["doc-0000007"] and not report["consistent"]
        assert json.loads(run(main, [*check, "--repair"]).output)["deleted_orphans"] == 1
        assert json.loads(run(main, check).output)["consistent"] is True
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
