"""Elasticsearch request bodies as dicts, without a server: mapping, filters, searches."""

from __future__ import annotations

import numpy as np
import pytest

from isr.errors import Conflict, InvalidInput
from isr.plugin.config import IndexConfig
from isr.plugin.es.mapping import (
    EsLayout,
    doc_source,
    exact_body,
    exhaustive_body,
    fast_from_exact,
    fast_from_knn,
    filter_query,
    index_body,
    index_template_body,
    keyword_query,
    knn_body,
    layout_of_mapping,
    mappings,
    maxsim_from_rescore,
    rescore_part,
    stats_body,
)
from isr.plugin.filters import parse_filter

CONFIG = IndexConfig(d_fast=64, d_frag=16, max_frags=8, r_i=6, bundle_fingerprint="abc")


def test_mapping_default_layout() -> None:
    m = mappings(CONFIG, EsLayout())
    assert m["dynamic"] is True and m["date_detection"] is False
    assert m["dynamic_templates"] == [
        {"isr_strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}},
        {"isr_doubles": {"match_mapping_type": "double", "mapping": {"type": "double"}}},
    ]
    own = m["properties"]["isr"]
    assert own["type"] == "object" and own["dynamic"] == "strict"
    assert own["properties"] == {
        "id": {"type": "keyword"},
        "keywords": {"type": "keyword"},
        "fast": {
            "type": "dense_vector",
            "dims": 64,
            "element_type": "float",
            "index": True,
            "similarity": "dot_product",
            "index_options": {"type": "int8_hnsw", "m": 16, "ef_construction": 100},
        },
    }
    assert m["_meta"]["isr"]["config"] == CONFIG.to_json()
    assert m["_meta"]["isr"]["layout"]["fragments"] == "sidecar"


@pytest.mark.parametrize(
    ("layout", "options"),
    [
        (
            EsLayout("bbq_hnsw", m=32, ef_construction=200),
            {"type": "bbq_hnsw", "m": 32, "ef_construction": 200},
        ),
        (EsLayout("hnsw", m=8), {"type": "hnsw", "m": 8, "ef_construction": 100}),
        (EsLayout("int8_flat"), {"type": "int8_flat"}),
    ],
)
def test_vector_index_options(layout: EsLayout, options: dict) -> None:
    own = mappings(CONFIG, layout)["properties"]["isr"]["properties"]
    assert own["fast"]["index_options"] == options


def test_rank_vectors_layout_and_index_body() -> None:
    layout = EsLayout(fragments="rank_vectors", shards=2, replicas=0)
    body = index_body(CONFIG, layout)
    assert body["settings"] == {"number_of_shards": 2, "number_of_replicas": 0}
    own = body["mappings"]["properties"]["isr"]["properties"]
    assert own["fragments"] == {"type": "rank_vectors", "dims": 16, "element_type": "float"}
    config, back = layout_of_mapping(body["mappings"], "g")
    assert config == CONFIG and back == layout
    tpl = index_template_body(["gallery-*"], CONFIG, layout)
    assert tpl["index_patterns"] == ["gallery-*"] and tpl["template"] == body
    assert index_body(CONFIG, EsLayout())["settings"] == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vector_index": "ivf"}, "vector_index 'ivf' is not one of"),
        ({"fragments": "s3"}, "fragments 's3' is not one of"),
        ({"m": 1}, r"m must be an integer in \[2, 512\]"),
        ({"ef_construction": 5000}, r"ef_construction must be an integer in \[1, 3200\]"),
        ({"replicas": -1}, "replicas must be an integer"),
    ],
)
def test_bad_layouts_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        EsLayout(**kwargs)


def test_bbq_needs_64_dims_and_foreign_mappings_are_refused() -> None:
    with pytest.raises(InvalidInput, match="bbq_hnsw needs at least 64 dims"):
        mappings(IndexConfig(d_fast=32, d_frag=16), EsLayout("bbq_hnsw"))
    with pytest.raises(Conflict, match="not an isr index"):
        layout_of_mapping({"properties": {}}, "logs")
    meta = mappings(CONFIG, EsLayout())
    meta["_meta"]["isr"]["schema_version"] = 99
    with pytest.raises(Conflict, match="schema version 99"):
        layout_of_mapping(meta, "g")


def test_filter_tree_becomes_filter_dsl() -> None:
    dsl = {
        "bool": {
            "filter": [
                {"term": {"license": "cc0"}},
                {"range": {"year": {"gte": 2010, "lt": 2015}}},
            ],
            "should": [{"terms": {"tag": ["a", "b"]}}, {"term": {"a__b": True}}],
            "must_not": [{"term": {"year": 2012}}],
        }
    }
    assert filter_query(parse_filter(dsl)) == {
        "bool": {
            "filter": [
                {"term": {"license": "cc0"}},
                {"range": {"year": {"gte": 2010.0, "lt": 2015.0}}},
                {
                    "bool": {
                        "should": [{"terms": {"tag": ["a", "b"]}}, {"term": {"a__b": True}}],
                        "minimum_should_match": 1,
                    }
                },
                {"bool": {"must_not": [{"term": {"year": 2012}}]}},
            ]
        }
    }
    assert filter_query(parse_filter({"match_all": {}})) == {"match_all": {}}


def test_keyword_screen_modes() -> None:
    labels = ("dog", "frisbee", "beach")
    assert keyword_query(labels, "any") == {"terms": {"isr.keywords": ["dog", "frisbee", "beach"]}}
    assert keyword_query(labels, "all") == {
        "bool": {"filter": [{"term": {"isr.keywords": x}} for x in labels]}
    }
    assert keyword_query(labels, "minimum_should_match", 2) == {
        "bool": {
            "should": [{"term": {"isr.keywords": x}} for x in labels],
            "minimum_should_match": 2,
        }
    }
    assert keyword_query(labels, "minimum_should_match", 1) == keyword_query(labels, "any")
    with pytest.raises(InvalidInput, match="no labels"):
        keyword_query((), "any")


def test_search_bodies() -> None:
    q = np.array([0.6, 0.8], np.float32)
    screen = keyword_query(("dog",), "any")
    pool = [filter_query(parse_filter({"term": {"license": "cc0"}}))]
    assert stats_body(pool, screen) == {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": pool}},
        "aggs": {"gallery": {"global": {}}, "screen": {"filter": screen}},
    }
    assert stats_body([], None)["query"] == {"match_all": {}}
    knn = knn_body(q, 200, 1000, [*pool, screen], with_source=True)
    assert knn == {
        "knn": {
            "field": "isr.fast",
            "query_vector": [0.6, 0.8],
            "k": 200,
            "num_candidates": 1000,
            "filter": [*pool, screen],
        },
        "size": 200,
        "track_total_hits": False,
        "_source": {"excludes": ["isr"]},
        "fields": ["isr.keywords"],
    }
    assert "filter" not in knn_body(q, 10, 100, [], with_source=False)["knn"]
    assert knn_body(q, 10, 100, [], with_source=False)["_source"] is False
    # exact without scripts: num_candidates covers every admitted document
    exact = exact_body(q, 50, 700, pool, with_source=True, quantized=True)
    assert exact["size"] == 50 and "query" not in exact
    assert exact["knn"] == {
        "field": "isr.fast",
        "query_vector": [0.6, 0.8],
        "k": 50,
        "num_candidates": 700,
        "filter": pool,
        "rescore_vector": {"oversample": 2.0},
    }
    assert exact_body(q, 50, 20, pool, True, quantized=False)["knn"]["num_candidates"] == 50
    assert "rescore_vector" not in exact_body(q, 5, 20, pool, True, False)["knn"]
    assert exact_body(q, 5, 50_000, pool, True, False)["knn"]["num_candidates"] == 10_000


def test_rank_vectors_rescore_and_exhaustive() -> None:
    qf = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
    qv = np.array([0.6, 0.8], np.float32)
    part = rescore_part(qf, qv, window=200)
    assert part["rescore"] == {
        "window_size": 200,
        "query": {
            "rescore_query": {
                "script_score": {
                    "query": {"match_all": {}},
                    "script": {
                        "source": "maxSimDotProduct(params.q, 'isr.fragments') + params.n",
                        "params": {"q": qf.astype(float).round(7).tolist(), "n": 3},
                    },
                }
            },
            "query_weight": 0.0,
            "rescore_query_weight": 1.0,
            "score_mode": "total",
        },
    }
    assert (
        part["script_fields"]["isr_fast"]["script"]["source"] == "dotProduct(params.q, 'isr.fast')"
    )
    body = knn_body(qv, 200, 1000, [], True, rescore=part, size=10)
    assert body["size"] == 10 and body["knn"]["k"] == 200 and "rescore" in body
    ex = exhaustive_body(qf, qv, 10, [], True)
    assert ex["query"]["script_score"]["script"]["params"]["n"] == 3 and ex["size"] == 10


def test_score_conversions_and_documents() -> None:
    assert fast_from_knn(0.75) == pytest.approx(0.5)
    assert fast_from_exact(0.75) == pytest.approx(0.5)
    assert maxsim_from_rescore(14.5, 12) == pytest.approx(2.5)
    frags = np.array([[0.6, 0.8]], np.float32)
    doc = doc_source("d1", ("dog",), np.array([1.0, 0.0]), frags, {"license": "cc0"})
    assert doc == {
        "license": "cc0",
        "isr": {"id": "d1", "keywords": ["dog"], "fast": [1.0, 0.0], "fragments": [[0.6, 0.8]]},
    }
    assert "fragments" not in doc_source("d1", (), np.ones(2), None, None)["isr"]
    with pytest.raises(InvalidInput, match="'isr' is reserved"):
        doc_source("d1", (), np.ones(2), None, {"isr": 1})
