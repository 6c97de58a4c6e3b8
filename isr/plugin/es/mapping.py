"""Request bodies for the Elasticsearch backend, built apart from sending them.

Entry points: :class:`EsLayout` (how an isr index lies in Elasticsearch), :func:`index_body` /
:func:`index_template_body` (settings + mapping), :func:`filter_query` (the pipeline's filter
tree as query DSL), and the search bodies :func:`stats_body`, :func:`knn_body`,
:func:`exact_body`, :func:`exhaustive_body`. Every function is pure: tests assert on the dicts
without a server, and :mod:`isr.plugin.es.backend` sends them.

Document layout: the user's `_source` fields at the top level (dynamically mapped; strings as
`keyword`, floats as `double`, no date detection, as the embedded index does), and isr's own
fields under one reserved object `isr`: `isr.id` (keyword copy of `_id`, sortable),
`isr.keywords` (the top R_I labels, keyword terms), `isr.fast` (`dense_vector`, dot_product on
L2-normalised vectors) and, when fragments live in Elasticsearch, `isr.fragments`
(`rank_vectors`). The index's IndexConfig and EsLayout sit in the mapping's `_meta.isr`;
application entries (an ingest's progress) in `_meta.isr_app`, apart, so that updating them
never touches the layout.

Scores: a kNN hit on a dot_product field scores (1 + dot) / 2; the exact fallback scores
dot + 1 (script scores must be >= 0); the `rank_vectors` rescore scores max-sim + n_q (each of
the n_q query fragments adds a max in [-1, 1]). The `*_from_*` functions undo the offsets.
Query vectors are sent as float32 values rounded to 7 significant digits (float32 precision).
"""

from __future__ import annotations

from collections.abc import Mapping as AbcMapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from elasticsearch.dsl import Mapping
from elasticsearch.dsl import field as F
from elasticsearch.dsl import query as Q

from isr.errors import Conflict, CorruptIndex, InvalidInput
from isr.plugin.config import FRAGMENT_HOMES, SCHEMA_VERSION, IndexConfig
from isr.plugin.filters import And, Filter, MatchAll, Not, Or, Range, Term, Terms

__all__ = [
    "APP_META",
    "FAST_FIELD",
    "FAST_SCRIPT_FIELD",
    "FRAGMENTS_FIELD",
    "FRAGMENT_HOMES",
    "ID_FIELD",
    "KEYWORDS_FIELD",
    "ROOT",
    "VECTOR_INDEXES",
    "EsLayout",
    "app_meta_of",
    "doc_source",
    "exact_body",
    "exhaustive_body",
    "fast_from_exact",
    "fast_from_knn",
    "filter_query",
    "index_body",
    "index_template_body",
    "keyword_query",
    "knn_body",
    "label_counts_body",
    "layout_of_mapping",
    "mappings",
    "maxsim_from_rescore",
    "stats_body",
    "with_app_meta",
]

ROOT = "isr"
APP_META = "isr_app"  # _meta entry holding application entries (see with_app_meta)
ID_FIELD = "isr.id"
KEYWORDS_FIELD = "isr.keywords"
FAST_FIELD = "isr.fast"
FRAGMENTS_FIELD = "isr.fragments"
FAST_SCRIPT_FIELD = "isr_fast"  # script field carrying the exact fast score of a hit
VECTOR_INDEXES = ("int8_hnsw", "bbq_hnsw", "hnsw", "int8_flat")
HNSW_TYPES = ("int8_hnsw", "bbq_hnsw", "hnsw")
BBQ_MIN_DIMS = 64  # Elasticsearch refuses bbq_* index types below 64 dims
MAX_M, MAX_EF_CONSTRUCTION = 512, 3200  # Lucene's HNSW bounds

# Painless sources; the query vectors travel as params so the scripts compile once.
_FAST = f"dotProduct(params.q, '{FAST_FIELD}')"
_MAXSIM = f"maxSimDotProduct(params.q, '{FRAGMENTS_FIELD}') + params.n"


def _int_in(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InvalidInput(f"es layout: {name} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


@dataclass(frozen=True)
class EsLayout:
    """How an isr index is laid out in Elasticsearch; fixed when the index is created.

    vector_index: index_options type of the fast vector (int8_hnsw default; bbq_hnsw, hnsw,
    int8_flat); m, ef_construction: HNSW parameters (ignored by int8_flat); fragments: where
    fragments live, "sidecar" (a FragmentStore beside the facade, reranked there) or
    "rank_vectors" (in Elasticsearch, reranked by a rescore); shards, replicas: index settings
    (None: Elasticsearch's defaults).
    """

    vector_index: str = "int8_hnsw"
    m: int = 16
    ef_construction: int = 100
    fragments: str = "sidecar"
    shards: int | None = None
    replicas: int | None = None

    def __post_init__(self) -> None:
        if self.vector_index not in VECTOR_INDEXES:
            raise InvalidInput(
                f"es layout: vector_index {self.vector_index!r} is not one of {VECTOR_INDEXES}"
            )
        if self.fragments not in FRAGMENT_HOMES:
            raise InvalidInput(
                f"es layout: fragments {self.fragments!r} is not one of {FRAGMENT_HOMES}"
            )
        _int_in("m", self.m, 2, MAX_M)
        _int_in("ef_construction", self.ef_construction, 1, MAX_EF_CONSTRUCTION)
        if self.shards is not None:
            _int_in("shards", self.shards, 1, 1024)
        if self.replicas is not None:
            _int_in("replicas", self.replicas, 0, 64)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EsLayout:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise CorruptIndex(f"es layout: unknown keys {sorted(unknown)}")
        return cls(**data)


# -- index creation --------------------------------------------------------------------------


def _index_options(d: int, layout: EsLayout) -> dict[str, Any]:
    if layout.vector_index.startswith("bbq") and d < BBQ_MIN_DIMS:
        raise InvalidInput(
            f"es layout: {layout.vector_index} needs at least {BBQ_MIN_DIMS} dims, the fast "
            f"vector has {d}; use int8_hnsw"
        )
    opts: dict[str, Any] = {"type": layout.vector_index}
    if layout.vector_index in HNSW_TYPES:
        opts.update(m=layout.m, ef_construction=layout.ef_construction)
    return opts


def mappings(config: IndexConfig, layout: EsLayout) -> dict[str, Any]:
    """The mapping of an isr index (see the module docstring for the layout)."""
    own: dict[str, Any] = {
        "id": F.Keyword(),
        "keywords": F.Keyword(),
        "fast": F.DenseVector(
            dims=config.d_fast,
            element_type="float",
            index=True,
            similarity="dot_product",
            index_options=_index_options(config.d_fast, layout),
        ),
    }
    if layout.fragments == "rank_vectors":
        own["fragments"] = F.RankVectors(dims=config.d_frag, element_type="float")
    m = Mapping()
    m.meta("meta", {ROOT: _meta(config, layout)})
    m.meta("dynamic", True)
    m.meta("date_detection", False)
    m.meta(
        "dynamic_templates",
        [
            {"isr_strings": {"match_mapping_type": "string", "mapping": {"type": "keyword"}}},
            {"isr_doubles": {"match_mapping_type": "double", "mapping": {"type": "double"}}},
        ],
    )
    m.field(ROOT, F.Object(dynamic="strict", properties=own))
    out: dict[str, Any] = m.to_dict()
    return out


def _meta(config: IndexConfig, layout: EsLayout) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_json(),
        "layout": layout.to_json(),
    }


def _settings(layout: EsLayout) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if layout.shards is not None:
        out["number_of_shards"] = layout.shards
    if layout.replicas is not None:
        out["number_of_replicas"] = layout.replicas
    return out


def index_body(config: IndexConfig, layout: EsLayout) -> dict[str, Any]:
    """Body of `PUT /{index}`: settings and mappings."""
    return {"settings": _settings(layout), "mappings": mappings(config, layout)}


def index_template_body(
    patterns: list[str], config: IndexConfig, layout: EsLayout, priority: int = 200
) -> dict[str, Any]:
    """Body of `PUT /_index_template/{name}`, so indexes matching `patterns` get the layout."""
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise InvalidInput(f"index template: patterns must be non-empty strings, got {patterns!r}")
    return {
        "index_patterns": list(patterns),
        "priority": priority,
        "template": index_body(config, layout),
        "_meta": {"description": "isr index layout", "managed_by": "isr"},
    }


def layout_of_mapping(mapping: dict[str, Any], index: str) -> tuple[IndexConfig, EsLayout]:
    """Read IndexConfig and EsLayout back from `GET /{index}/_mapping`'s mapping of one index."""
    meta = (mapping.get("_meta") or {}).get(ROOT)
    if not isinstance(meta, dict):
        raise Conflict(f"Elasticsearch index {index!r} is not an isr index (no _meta.{ROOT})")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise Conflict(
            f"Elasticsearch index {index!r}: schema version {version}, this isr reads "
            f"{SCHEMA_VERSION}"
        )
    try:
        return IndexConfig.from_json(dict(meta["config"])), EsLayout.from_json(dict(meta["layout"]))
    except (KeyError, TypeError, InvalidInput) as e:
        raise CorruptIndex(f"Elasticsearch index {index!r}: bad _meta.{ROOT} ({e})") from e


def app_meta_of(mapping: dict[str, Any]) -> dict[str, Any]:
    """The application entries in a mapping's `_meta.isr_app` ({} when none)."""
    got = (mapping.get("_meta") or {}).get(APP_META) or {}
    if not isinstance(got, dict):
        raise CorruptIndex(f"_meta.{APP_META}: expected an object, got {type(got).__name__}")
    return got


def with_app_meta(meta: dict[str, Any] | None, entries: AbcMapping[str, Any]) -> dict[str, Any]:
    """The whole `_meta` to send with `PUT /{index}/_mapping` (Elasticsearch replaces `_meta`
    as a whole): `meta` as it is, `_meta.isr` untouched, `entries` merged into `_meta.isr_app`."""
    for k in entries:
        if not isinstance(k, str) or not k:
            raise InvalidInput(f"app meta: entry names are non-empty strings, got {k!r}")
    out = dict(meta or {})
    out[APP_META] = {**app_meta_of({"_meta": out}), **entries}
    return out


# -- documents -------------------------------------------------------------------------------


def _vec(x: np.ndarray) -> list[Any]:
    # float32 has ~7 significant digits; more only lengthens the JSON.
    out: list[Any] = np.round(np.asarray(x, np.float64), 7).tolist()
    return out


def doc_source(
    doc_id: str,
    labels: tuple[str, ...],
    fast: np.ndarray,
    fragments: np.ndarray | None,
    source: dict[str, Any] | None,
) -> dict[str, Any]:
    """`_source` of one document: the user's fields plus isr's own object.

    fast (d_fast,); fragments (n, d) of real fragments only, or None (sidecar layout).
    """
    body = dict(source or {})
    if ROOT in body:
        raise InvalidInput(
            f"document {doc_id!r}: the top-level field {ROOT!r} is reserved for isr's own fields"
        )
    own: dict[str, Any] = {"id": doc_id, "keywords": list(labels), "fast": _vec(fast)}
    if fragments is not None:
        own["fragments"] = _vec(fragments)
    body[ROOT] = own
    return body


# -- filters ---------------------------------------------------------------------------------


def filter_query(f: Filter) -> dict[str, Any]:
    """The pipeline's parsed filter tree as query DSL (elasticsearch.dsl), for filter context."""
    out: dict[str, Any] = _to_dsl(f).to_dict()
    return out


def _to_dsl(f: Filter) -> Q.Query:
    # _expand__to_dot=False: field names are taken as written ("a__b" stays "a__b").
    if isinstance(f, Term):
        return Q.Term(_expand__to_dot=False, **{f.field: f.value})
    if isinstance(f, Terms):
        values: dict[str, Any] = {f.field: list(f.values)}
        return Q.Terms(_expand__to_dot=False, **values)
    if isinstance(f, Range):
        bounds = {op: getattr(f, op) for op in ("gt", "gte", "lt", "lte")}
        return Q.Range(
            _expand__to_dot=False, **{f.field: {k: v for k, v in bounds.items() if v is not None}}
        )
    if isinstance(f, And):
        return Q.Bool(filter=[_to_dsl(c) for c in f.children])
    if isinstance(f, Or):
        return Q.Bool(should=[_to_dsl(c) for c in f.children], minimum_should_match=1)
    if isinstance(f, Not):
        return Q.Bool(must_not=[_to_dsl(f.child)])
    assert isinstance(f, MatchAll), f
    return Q.MatchAll()


def keyword_query(labels: tuple[str, ...], mode: str, minimum_should_match: int = 1) -> dict:
    """The keyword screen on `isr.keywords`: any (terms), all, or at least m of the labels."""
    if not labels:
        raise InvalidInput("keyword screen: the query has no labels")
    if mode == "any" or (mode == "minimum_should_match" and minimum_should_match <= 1):
        values: dict[str, Any] = {KEYWORDS_FIELD: list(labels)}
        q: Q.Query = Q.Terms(_expand__to_dot=False, **values)
    elif mode == "all":
        q = Q.Bool(filter=[Q.Term(_expand__to_dot=False, **{KEYWORDS_FIELD: x}) for x in labels])
    elif mode == "minimum_should_match":
        q = Q.Bool(
            should=[Q.Term(_expand__to_dot=False, **{KEYWORDS_FIELD: x}) for x in labels],
            minimum_should_match=minimum_should_match,
        )
    else:
        raise InvalidInput(f"keyword mode {mode!r} is not one of any, all, minimum_should_match")
    out: dict[str, Any] = q.to_dict()
    return out


# -- searches --------------------------------------------------------------------------------


def _source_spec(with_source: bool) -> Any:
    return {"excludes": [ROOT]} if with_source else False


def stats_body(pool: list[dict[str, Any]], screen: dict[str, Any] | None) -> dict[str, Any]:
    """One size-0 search counting, exactly: every live document (`global`), the documents
    the user's filters admit (hits.total) and those the keyword screen admits among them
    (the `screen` filter aggregation). It rides in the same msearch as the kNN request."""
    aggs: dict[str, Any] = {"gallery": {"global": {}}}
    if screen is not None:
        aggs["screen"] = {"filter": screen}
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": pool}} if pool else {"match_all": {}},
        "aggs": aggs,
    }


def label_counts_body(labels: list[str]) -> dict[str, Any]:
    """One size-0 search counting the live documents (hits.total) and, per label of `labels`,
    the documents storing it (`terms` on `isr.keywords`, only those labels, all of them)."""
    return {
        "size": 0,
        "track_total_hits": True,
        "aggs": {
            "labels": {
                "terms": {
                    "field": KEYWORDS_FIELD,
                    "include": list(labels),
                    "size": max(1, len(labels)),
                }
            }
        },
    }


def knn_body(
    q_fast: np.ndarray,
    k: int,
    num_candidates: int,
    filters: list[dict[str, Any]],
    with_source: bool,
    rescore: dict[str, Any] | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """Top-level approximate kNN with the filters as a pre-filter (`knn.filter`)."""
    knn: dict[str, Any] = {
        "field": FAST_FIELD,
        "query_vector": _vec(q_fast),
        "k": k,
        "num_candidates": num_candidates,
    }
    if filters:
        knn["filter"] = filters
    body: dict[str, Any] = {
        "knn": knn,
        "size": k if size is None else size,
        "track_total_hits": False,
        "_source": _source_spec(with_source),
        "fields": [KEYWORDS_FIELD],
    }
    if rescore is not None:
        body.update(rescore)
    return body


# Elasticsearch refuses a kNN num_candidates above this
MAX_NUM_CANDIDATES = 10_000


def exact_body(
    q_fast: np.ndarray,
    k: int,
    admitted: int,
    filters: list[dict[str, Any]],
    with_source: bool,
    quantized: bool,
    rescore: dict[str, Any] | None = None,
    size: int | None = None,
) -> dict[str, Any]:
    """Exact fast-vector search over the filtered set, without scripts (no lang-painless).

    For selective filters, where HNSW would walk a graph mostly made of excluded documents.
    A kNN whose num_candidates is at least the number of documents the filter admits makes
    Lucene score every admitted document instead of walking the graph (exact top-k; checked
    against brute force in tools/es/README.md); Elasticsearch caps num_candidates at
    MAX_NUM_CANDIDATES, above which Lucene decides per segment. A quantized vector index
    (int8/bbq) scores with the quantized vectors unless `rescore_vector` asks for the float
    ones, so it does here. The score is the kNN one, (1 + dot) / 2.
    """
    n = min(max(k, admitted), MAX_NUM_CANDIDATES)
    body = knn_body(q_fast, min(k, n), n, filters, with_source, rescore, size)
    if quantized:
        body["knn"]["rescore_vector"] = {"oversample": 2.0}
    return body


def rescore_part(q_frags: np.ndarray, q_fast: np.ndarray, window: int) -> dict[str, Any]:
    """The `rank_vectors` rerank: a query rescore over the top `window` hits whose score is
    the max-sim alone, plus a script field with each returned hit's exact fast score.

    q_frags (n_q, d): the query's real fragments.
    """
    n = int(q_frags.shape[0])
    return {
        "rescore": {
            "window_size": window,
            "query": {
                "rescore_query": {
                    "script_score": {
                        "query": {"match_all": {}},
                        "script": {"source": _MAXSIM, "params": {"q": _vec(q_frags), "n": n}},
                    }
                },
                "query_weight": 0.0,
                "rescore_query_weight": 1.0,
                "score_mode": "total",
            },
        },
        "script_fields": _fast_script_field(q_fast),
    }


def _fast_script_field(q_fast: np.ndarray) -> dict[str, Any]:
    return {FAST_SCRIPT_FIELD: {"script": {"source": _FAST, "params": {"q": _vec(q_fast)}}}}


def exhaustive_body(
    q_frags: np.ndarray, q_fast: np.ndarray, size: int, filters: list[dict[str, Any]], src: bool
) -> dict[str, Any]:
    """Exhaustive max-sim over the filtered set inside Elasticsearch (`rank_vectors` layout)."""
    n = int(q_frags.shape[0])
    body = {
        "query": {
            "script_score": {
                "query": {"bool": {"filter": filters}} if filters else {"match_all": {}},
                "script": {"source": _MAXSIM, "params": {"q": _vec(q_frags), "n": n}},
            }
        },
        "size": size,
        "track_total_hits": False,
        "_source": _source_spec(src),
        "fields": [KEYWORDS_FIELD],
        "script_fields": _fast_script_field(q_fast),
    }
    return body


def fast_from_knn(score: float) -> float:
    return 2.0 * score - 1.0


def fast_from_exact(score: float) -> float:
    """The exact path is a kNN too (see exact_body): the same score as fast_from_knn."""
    return fast_from_knn(score)


def maxsim_from_rescore(score: float, n_query_fragments: int) -> float:
    return score - n_query_fragments
