"""The isr pipeline: each fast path against brute force, ablations, filters, bad options."""

from __future__ import annotations

import numpy as np
import pytest
from pyroaring import BitMap

from isr.encoders.record import Encoded, Keywords
from isr.errors import InvalidInput
from isr.ingest.encoded_world import encoded_queries
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.pipeline import ABLATIONS, KeywordOptions, SearchOptions, search


def _brute_maxsim(idx: EmbeddedIndex, q: Encoded, rows: np.ndarray) -> np.ndarray:
    frags, mask = idx.fragments.gather(rows)
    qf = q.fragments[0][q.mask[0]]
    out = []
    for f, m in zip(frags, mask):
        sims = qf @ f[m].T
        out.append(sims.max(axis=1).sum())
    return np.array(out)


def test_filtered_hnsw_recall_against_exact(world_index: EmbeddedIndex) -> None:
    idx = world_index
    queries, _ = encoded_queries(idx.world, 40)  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    recalls = []
    for i in range(len(queries)):
        allowed = BitMap(np.flatnonzero(rng.random(idx.n_rows) < 0.3).astype(np.uint32))
        q = queries.fast[i]
        approx = idx.knn(q, 10, 128, allowed, exact_threshold=0)
        assert approx.method == "hnsw"
        assert set(approx.rows.tolist()) <= set(allowed)
        exact = idx.fast.exact(q, 10, allowed)
        recalls.append(len(set(approx.rows.tolist()) & set(exact.rows.tolist())) / 10)
    assert np.mean(recalls) >= 0.95, np.mean(recalls)


def test_selective_filter_switches_to_exact(world_index: EmbeddedIndex) -> None:
    idx = world_index
    q = encoded_queries(idx.world, 1)[0].fast[0]  # type: ignore[attr-defined]
    allowed = BitMap([5, 17, 900, 2999])
    res = idx.knn(q, 10, 100, allowed, exact_threshold=100)
    assert res.method == "exact" and sorted(res.rows.tolist()) == [5, 17, 900, 2999]
    scores = idx.fast.vectors_at(np.array([5, 17, 900, 2999])) @ q
    np.testing.assert_allclose(np.sort(res.scores)[::-1], np.sort(scores)[::-1], rtol=1e-5)


def test_full_pipeline_rerank_is_exact_maxsim_over_candidates(world_index: EmbeddedIndex) -> None:
    idx = world_index
    queries, _ = encoded_queries(idx.world, 5)  # type: ignore[attr-defined]
    for i in range(len(queries)):
        q = queries[i]
        res = search(idx, q, SearchOptions(size=10, rerank_window=50, num_candidates=100))
        rows = np.array([idx.rows_of([h.id])[h.id] for h in res.hits])
        brute = _brute_maxsim(idx, q, rows)
        np.testing.assert_allclose([h.maxsim_score for h in res.hits], brute, rtol=1e-4)
        assert [h.score for h in res.hits] == sorted((h.score for h in res.hits), reverse=True)
        used = set(res.profile.query_keywords)
        for h, r in zip(res.hits, rows):
            assert set(h.keywords_matched) == used & set(idx.labels_of(np.array([r]))[0])


def test_exhaustive_equals_brute_force(world_index: EmbeddedIndex) -> None:
    idx = world_index
    q = encoded_queries(idx.world, 1, seed=4)[0]  # type: ignore[attr-defined]
    res = search(idx, q, SearchOptions.for_ablation("exhaustive", size=10))
    brute = _brute_maxsim(idx, q, np.arange(idx.n_rows))
    top = np.argsort(-brute, kind="stable")[:10]
    assert [h.id for h in res.hits] == [idx.docs_at([int(r)])[int(r)][0] for r in top]
    res_kw = search(idx, q, SearchOptions.for_ablation("keywords+exhaustive", size=10))
    admitted = idx.keyword_rows(q.keywords[0].top(3), "any")
    assert res_kw.total == len(admitted)
    sub = np.array(admitted.to_array(), dtype=np.int64)
    top_kw = sub[np.argsort(-_brute_maxsim(idx, q, sub), kind="stable")[:10]]
    assert [h.id for h in res_kw.hits] == [idx.docs_at([int(r)])[int(r)][0] for r in top_kw]


def test_every_ablation_runs_and_finds_the_target(world_index: EmbeddedIndex) -> None:
    idx = world_index
    queries, truth = encoded_queries(idx.world, 20)  # type: ignore[attr-defined]
    for name in ABLATIONS:
        opt = SearchOptions.for_ablation(name, size=10, rerank_window=100, num_candidates=200)
        found = 0
        for i in range(len(queries)):
            res = search(idx, queries[i], opt)
            assert len(res.hits) == 10
            found += truth[i] in [h.id for h in res.hits]
            names = [s.name for s in res.profile.stages]
            assert ("keywords" in names) == opt.use_keywords
            assert ("knn" in names) == opt.use_knn and ("rerank" in names) == opt.use_rerank
            if not opt.use_rerank:
                assert all(h.maxsim_score is None for h in res.hits)
        assert found >= 16, (name, found)


def test_keyword_modes_and_relaxation(world_index: EmbeddedIndex) -> None:
    idx = world_index
    q = encoded_queries(idx.world, 1)[0]  # type: ignore[attr-defined]
    labels = q.keywords[0].top(3)
    any_ = idx.keyword_rows(labels, "any")
    all_ = idx.keyword_rows(labels, "all")
    two = idx.keyword_rows(labels, "minimum_should_match", 2)
    assert all_ <= two <= any_
    lists = [idx.keyword_rows([lab], "any") for lab in labels]
    assert any_ == BitMap.union(*lists) and all_ == BitMap.intersection(*lists)
    # a label nobody has: the filter admits nothing, so it is relaxed and says so
    odd = Encoded(q.fast, q.fragments, q.mask, (Keywords(("no-such-label",), (0.9,)),))
    res = search(idx, odd, SearchOptions(size=5, rerank_window=20, num_candidates=50))
    assert res.profile.relaxed and "admitted 0 < size 5" in res.profile.relax_reason
    assert len(res.hits) == 5
    res = search(idx, q, SearchOptions(keywords=KeywordOptions(r_t=3, mode="all")))
    assert res.total == len(all_) or res.profile.relaxed


def test_user_filters(world_index: EmbeddedIndex) -> None:
    idx = world_index
    q = encoded_queries(idx.world, 1)[0]  # type: ignore[attr-defined]
    filt = {
        "bool": {
            "filter": [
                {"term": {"license": "cc0"}},
                {"range": {"year": {"gte": 2010, "lt": 2015}}},
            ],
            "must_not": [{"term": {"year": 2012}}],
        }
    }
    res = search(idx, q, SearchOptions(size=20, filter=filt))
    assert res.hits
    for h in res.hits:
        assert h.source is not None and h.source["license"] == "cc0"
        assert 2010 <= h.source["year"] < 2015 and h.source["year"] != 2012
    res = search(idx, q, SearchOptions(size=5, filter={"terms": {"year": [2003, 2004]}}))
    assert {h.source["year"] for h in res.hits if h.source} <= {2003, 2004}
    with pytest.raises(InvalidInput, match="unknown filter field 'colour'"):
        search(idx, q, SearchOptions(filter={"term": {"colour": "red"}}))
    with pytest.raises(InvalidInput, match="range on field 'license'"):
        search(idx, q, SearchOptions(filter={"range": {"license": {"gte": 1}}}))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, r"size must be in \[1, 10000\]"),
        ({"size": 10_001}, r"size must be in \[1, 10000\]"),
        ({"size": 50, "rerank_window": 20}, "rerank_window .* must be >= size"),
        ({"num_candidates": 100, "rerank_window": 200}, "num_candidates .* must be >= k"),
        ({"use_knn": False, "use_rerank": False}, "at least one of knn and rerank"),
        ({"filter": {"match": {"title": "dog"}}}, "unsupported filter clause 'match'"),
        ({"filter": {"range": {"year": {"from": 1}}}}, "unknown bounds"),
        ({"size": "10"}, "size must be an integer"),
    ],
)
def test_bad_options_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        SearchOptions(**kwargs)


def test_bad_queries(world_index: EmbeddedIndex) -> None:
    idx = world_index
    with pytest.raises(InvalidInput, match="fast vector has 8 dims, the index has 32"):
        search(
            idx,
            Encoded(
                np.ones((1, 8)), np.ones((1, 2, 16)), np.ones((1, 2), bool), (Keywords.none(),)
            ),
        )
    with pytest.raises(InvalidInput, match="fragments have 4 dims"):
        search(
            idx,
            Encoded(
                np.ones((1, 32)), np.ones((1, 2, 4)), np.ones((1, 2), bool), (Keywords.none(),)
            ),
        )
    two = Encoded(
        np.ones((2, 32)), np.ones((2, 2, 16)), np.ones((2, 2), bool), (Keywords.none(),) * 2
    )
    with pytest.raises(InvalidInput, match="exactly one item"):
        search(idx, two)
    with pytest.raises(InvalidInput, match="unknown ablation"):
        SearchOptions.for_ablation("magic")


def test_exact_scan_in_place_equals_gather(world_index: EmbeddedIndex) -> None:
    idx = world_index
    q = encoded_queries(idx.world, 1, seed=9)[0].fast[0]  # type: ignore[attr-defined]
    allowed = BitMap(
        np.flatnonzero(np.random.default_rng(1).random(idx.n_rows) < 0.4).astype(np.uint32)
    )
    gathered = idx.fast.gather(q, 50, allowed)  # 1,200 rows: gathered from the vector file
    scanned = idx.fast.exact(q, 50, allowed)  # scanned in place by FAISS's flat storage
    assert gathered.method == "gather" and scanned.method == "exact"
    assert scanned.rows.tolist() == gathered.rows.tolist()
    np.testing.assert_allclose(scanned.scores, gathered.scores, rtol=1e-5)
    everything = idx.fast.exact(q, 5, None)
    brute = idx.fast.vectors_at(np.arange(idx.n_rows)) @ q
    assert everything.rows.tolist() == np.argsort(-brute, kind="stable")[:5].tolist()
