"""Elasticsearch's request and response shapes for the HTTP facade, as pure functions.

Entry points: :func:`parse_search` (a `_search` body with `ext.isr` -> :class:`IsrSearch`),
:func:`render_search` (a :class:`SearchResult` -> Elasticsearch's response), :func:`parse_plain`
and :func:`render_plain` (filter-only searches without the pipeline), :func:`parse_rerank` /
:func:`render_rerank` and :func:`parse_embed` / :func:`render_embed` (the JSON shapes the
`custom` inference service is told to use, see docs), and :func:`error_body`.

The `_search` body: `size`, `from`, `query` and `post_filter` (term, terms, range, bool,
match_all: both become pre-filters of the pipeline), `_source` (bool), `explain`, `ext.isr`
(`query_text`, `query_encoded` or `query_image` (base64), `num_candidates`, `rerank_window`, `keywords`, `ablation`,
`exact_threshold`, `explain`). Anything else is refused with a message naming what is supported.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from isr.encoders.record import Encoded
from isr.errors import InvalidInput
from isr.plugin.filters import MatchAll, parse_filter
from isr.plugin.http.queryfile import query_from_json
from isr.plugin.keyword_rule import KEYWORD_FIELDS
from isr.plugin.pipeline import ABLATIONS, MAX_K, KeywordOptions, SearchOptions, SearchResult

__all__ = [
    "EXT_KEYS",
    "SEARCH_KEYS",
    "IsrSearch",
    "PlainSearch",
    "check_size",
    "error_body",
    "parse_embed",
    "parse_plain",
    "parse_rerank",
    "parse_search",
    "render_embed",
    "render_plain",
    "render_rerank",
    "render_search",
]

SEARCH_KEYS = (
    "size",
    "from",
    "query",
    "post_filter",
    "_source",
    "explain",
    "ext",
    "track_total_hits",
    "timeout",
)
EXT_KEYS = (
    "query_text",
    "query_encoded",
    "query_image",
    "num_candidates",
    "rerank_window",
    "keywords",
    "ablation",
    "exact_threshold",
    "explain",
)
# every KeywordOptions field (r_t, mode, minimum_should_match, text, rule, alpha, p_min, mass,
# stop, r_i); what a query leaves out comes from the index's defaults (IndexConfig.keywords)
KEYWORD_KEYS = KEYWORD_FIELDS
SHARDS = {"total": 1, "successful": 1, "skipped": 0, "failed": 0}
MAX_TEXTS = 1_000  # texts per rerank / embed request
MAX_TEXT_CHARS = 10_000  # characters per text
MAX_TOTAL_CHARS = 200_000  # characters per rerank / embed request (bounds the encoder's work)
MAX_IMAGE_B64 = 12 * 2**20  # ext.isr.query_image: base64 of an image of up to ~9 MB


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{where} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{where} must be true or false, got {value!r}")
    return value


def _unknown(body: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    bad = sorted(set(body) - set(known))
    if bad:
        raise InvalidInput(f"{where}: unsupported key(s) {bad}; supported: {', '.join(known)}")


def _filters(body: dict[str, Any]) -> tuple[list[Any], bool]:
    """query and post_filter as pre-filters (validated); and whether the query scores all 1."""
    out: list[Any] = []
    constant = True
    for key in ("query", "post_filter"):
        if key not in body:
            continue
        try:
            tree = parse_filter(body[key])
        except InvalidInput as e:
            raise InvalidInput(f"{key}: {e}") from None
        if tree is None or isinstance(tree, MatchAll):
            continue
        out.append(body[key])
        constant = constant and key != "query"
    return out, constant


def _source_flag(body: dict[str, Any]) -> bool:
    src = body.get("_source", True)
    if not isinstance(src, bool):
        raise InvalidInput(
            f"_source: only true or false are supported, got {src!r} (no includes/excludes)"
        )
    return src


def check_size(value: Any, where: str = "size") -> int:
    """Hits to return, as Elasticsearch allows: 0 (only the total) to 10000. The CLI's
    ``--size`` and the HTTP ``size`` share this one rule."""
    return _int(value, where, 0, MAX_K)


def _window(body: dict[str, Any]) -> tuple[int, int]:
    size = check_size(body.get("size", 10))
    start = _int(body.get("from", 0), "from", 0, MAX_K)
    if start + size > MAX_K:
        raise InvalidInput(
            f"Result window is too large, from + size must be less than or equal to: [{MAX_K}] "
            f"but was [{start + size}] (index.max_result_window)"
        )
    return start, size


@dataclass(frozen=True)
class IsrSearch:
    """A parsed `_search` for the isr pipeline."""

    options: SearchOptions
    start: int  # `from`
    size: int  # hits to return (0: only the total)
    query_text: str | None
    query: Encoded | None
    explain: bool
    query_image: bytes | None = None  # an image file's bytes (ext.isr.query_image)


def parse_search(body: Any) -> IsrSearch:
    """Validate a `_search` body carrying `ext.isr` and build the pipeline's options."""
    body = _obj(body, "request body")
    _unknown(body, SEARCH_KEYS, "search body (isr pipeline)")
    start, size = _window(body)
    filters, _ = _filters(body)
    ext = _obj(body.get("ext", {}), "ext").get("isr")
    if ext is None:
        raise InvalidInput(
            "search_pipeline=isr needs ext.isr with query_text or query_encoded, as in "
            '{"ext": {"isr": {"query_text": "a dog catching a frisbee"}}}'
        )
    ext = _obj(ext, "ext.isr")
    _unknown(ext, EXT_KEYS, "ext.isr")
    given = [k for k in ("query_text", "query_encoded", "query_image") if k in ext]
    if len(given) != 1:
        raise InvalidInput(
            "ext.isr: give exactly one of query_text and query_encoded, or query_image"
            + (f" (got {', '.join(given)})" if given else "")
        )
    text, query, image = None, None, None
    if "query_image" in ext:
        image = _image(ext["query_image"])
    elif "query_text" in ext:
        text = ext["query_text"]
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
            raise InvalidInput(
                f"ext.isr.query_text must be a non-empty string of at most {MAX_TEXT_CHARS} "
                "characters"
            )
    else:
        query = query_from_json(_obj(ext["query_encoded"], "ext.isr.query_encoded"))
    n = max(start + size, 1)  # size 0 (only the total) still runs the pipeline for one hit
    ablation = ext.get("ablation", "full")
    if not isinstance(ablation, str) or ablation not in ABLATIONS:
        raise InvalidInput(f"ext.isr.ablation {ablation!r} is not one of {list(ABLATIONS)}")
    window = _int(ext.get("rerank_window", max(200, n)), "ext.isr.rerank_window", 1, MAX_K)
    kw = _obj(ext.get("keywords", {}), "ext.isr.keywords")
    _unknown(kw, KEYWORD_KEYS, "ext.isr.keywords")
    use_rerank = ABLATIONS[ablation][2]
    k = window if use_rerank else n
    extra: dict[str, Any] = {}
    if "exact_threshold" in ext:
        extra["exact_threshold"] = ext["exact_threshold"]
    options = SearchOptions.for_ablation(
        ablation,
        size=n,
        num_candidates=ext.get("num_candidates", max(1000, k)),
        rerank_window=window,
        keywords=KeywordOptions.partial(kw, "ext.isr.keywords"),
        filter=filters or None,
        with_source=_source_flag(body),
        **extra,
    )
    explain = _bool(ext.get("explain", body.get("explain", False)), "ext.isr.explain")
    return IsrSearch(options, start, size, text, query, explain, image)


def _image(value: Any) -> bytes:
    """ext.isr.query_image: base64 (standard alphabet) of an image file, optionally as a
    data URL (``data:image/png;base64,...``, what a browser's FileReader gives)."""
    if not isinstance(value, str) or not value:
        raise InvalidInput("ext.isr.query_image must be a non-empty base64 string")
    if value.startswith("data:"):
        head, sep, value = value.partition(",")
        if not sep or not head.endswith(";base64"):
            raise InvalidInput("ext.isr.query_image: a data URL must be base64 (data:...;base64,)")
    if len(value) > MAX_IMAGE_B64:
        raise InvalidInput(
            f"ext.isr.query_image has {len(value)} base64 characters, the limit is {MAX_IMAGE_B64}"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"ext.isr.query_image is not valid base64 ({e})") from None


def _total(total: int, as_int: bool) -> Any:
    return total if as_int else {"value": total, "relation": "eq"}


def render_search(
    index: str,
    req: IsrSearch,
    result: SearchResult,
    took_ms: float,
    encode_ms: float = 0.0,
    total_as_int: bool = False,
) -> dict[str, Any]:
    """Elasticsearch's search response, plus `_isr` per hit and the `isr` profile."""
    hits = []
    for h in result.hits[req.start : req.start + req.size]:
        hit: dict[str, Any] = {"_index": index, "_id": h.id, "_score": h.score}
        if req.options.with_source:
            hit["_source"] = h.source if h.source is not None else {}
        hit["_isr"] = {
            "keywords_matched": list(h.keywords_matched),
            "fast_score": h.fast_score,
            "maxsim_score": h.maxsim_score,
        }
        if req.explain:
            hit["_explanation"] = _explanation(h.score, h.fast_score, h.maxsim_score, h)
        hits.append(hit)
    p = result.profile
    return {
        "took": round(took_ms),
        "timed_out": False,
        "_shards": SHARDS,
        "hits": {
            "total": _total(result.total, total_as_int),
            "max_score": max((h["_score"] for h in hits), default=None),
            "hits": hits,
        },
        "isr": {
            "pipeline": "isr",
            "ablation": req.options.ablation,
            "took_ms": p.took_ms,
            "encode_ms": encode_ms,
            "gallery": p.gallery,
            "query_keywords": list(p.query_keywords),
            "relaxed": p.relaxed,
            "relax_reason": p.relax_reason,
            "stages": [
                {"name": s.name, "ms": s.ms, "count": s.count, "detail": s.detail} for s in p.stages
            ],
        },
    }


def _explanation(score: float, fast: float, maxsim: float | None, h: Any) -> dict[str, Any]:
    details = [
        {"value": fast, "description": "fast score: cos(w_1, r_1) of the fast model", "details": []}
    ]
    if maxsim is not None:
        details.append(
            {
                "value": maxsim,
                "description": "max-sim: sum over query fragments of the best document fragment",
                "details": [],
            }
        )
    matched = ", ".join(h.keywords_matched) or "none"
    return {
        "value": score,
        "description": f"isr score ({'max-sim' if maxsim is not None else 'fast'}); "
        f"keywords matched: {matched}",
        "details": details,
    }


@dataclass(frozen=True)
class PlainSearch:
    """A filter-only `_search` without the pipeline (embedded mode)."""

    filter: Any
    start: int
    size: int
    with_source: bool
    score: float  # Elasticsearch's constant score: 1.0 for match_all, 0.0 in filter context


def parse_plain(body: Any) -> PlainSearch:
    body = _obj(body, "request body")
    known = tuple(k for k in SEARCH_KEYS if k not in ("ext", "explain"))
    _unknown(body, known, "search body (without search_pipeline=isr)")
    start, size = _window(body)
    filters, constant = _filters(body)
    return PlainSearch(filters or None, start, size, _source_flag(body), 1.0 if constant else 0.0)


def render_plain(
    index: str,
    req: PlainSearch,
    docs: list[tuple[str, dict[str, Any] | None]],
    total: int,
    took_ms: float,
    total_as_int: bool = False,
) -> dict[str, Any]:
    hits = []
    for doc_id, src in docs:
        hit: dict[str, Any] = {"_index": index, "_id": doc_id, "_score": req.score}
        if req.with_source:
            hit["_source"] = src if src is not None else {}
        hits.append(hit)
    return {
        "took": round(took_ms),
        "timed_out": False,
        "_shards": SHARDS,
        "hits": {
            "total": _total(total, total_as_int),
            "max_score": req.score if hits else None,
            "hits": hits,
        },
    }


def _texts(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or len(value) > MAX_TEXTS:
        raise InvalidInput(f"{where}: expected a list of 1 to {MAX_TEXTS} strings")
    total = 0
    for i, t in enumerate(value):
        if not isinstance(t, str) or not t.strip() or len(t) > MAX_TEXT_CHARS:
            raise InvalidInput(
                f"{where}[{i}]: expected a non-empty string of at most {MAX_TEXT_CHARS} chars"
            )
        total += len(t)
    if total > MAX_TOTAL_CHARS:
        raise InvalidInput(f"{where}: {total} characters in all, at most {MAX_TOTAL_CHARS}")
    return value


def parse_rerank(body: Any) -> tuple[str, list[str], int | None]:
    """`{"query": str, "documents": [str], "top_n": int?}` -> (query, documents, top_n)."""
    body = _obj(body, "request body")
    _unknown(body, ("query", "documents", "top_n", "return_documents"), "rerank")
    query = body.get("query")
    if not isinstance(query, str):
        raise InvalidInput(f"rerank.query: expected one string, got {type(query).__name__}")
    (query,) = _texts(query, "rerank.query")
    docs = _texts(body.get("documents"), "rerank.documents")
    top_n = body.get("top_n")
    if top_n is not None:
        top_n = _int(top_n, "rerank.top_n", 1, MAX_TEXTS)
    return query, docs, top_n


def render_rerank(scores: list[float], top_n: int | None) -> dict[str, Any]:
    """`{"results": [{"index": i, "relevance_score": s}, ...]}`, best first."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:top_n]
    return {"results": [{"index": i, "relevance_score": scores[i]} for i in order]}


def parse_embed(body: Any) -> list[str]:
    """`{"input": [str] | str, "input_type": ...}` -> the texts."""
    body = _obj(body, "request body")
    _unknown(body, ("input", "input_type", "model"), "embed")
    return _texts(body.get("input"), "embed.input")


def render_embed(vectors: list[list[float]]) -> dict[str, Any]:
    """OpenAI's embeddings shape: `{"object": "list", "data": [{"index", "embedding"}]}`."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
        ],
    }


def error_body(status: int, es_type: str, reason: str, **extra: Any) -> dict[str, Any]:
    """Elasticsearch's error shape."""
    cause = {"type": es_type, "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}
