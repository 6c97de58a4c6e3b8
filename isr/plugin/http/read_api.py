"""Elasticsearch's read APIs on the embedded facade, in Elasticsearch's shapes.

Entry point: :func:`register_read_api(app, facade)` (called by
:func:`isr.plugin.http.server.create_app` in embedded mode; in Elasticsearch mode these
paths are proxied to the cluster like any other). Answers:

- ``GET|POST /{index}/_count`` (optional ``query``: term, terms, range, bool, match_all);
- ``GET|HEAD /{index}/_doc/{id}`` (404 with ``found: false`` for an unknown id);
- ``GET|POST /_mget`` and ``/{index}/_mget`` (``docs`` with ``_id`` / ``_index``, or ``ids``);
- ``GET /{index}`` (aliases, mappings, settings), ``GET /{index}/_mapping``, ``GET /_mapping``;
- ``GET /_cat/indices[/{index}]`` as text (``?v`` for the header, ``?h=`` for columns) or
  ``?format=json``.

The mapping is the index's dynamic mapping of `_source` fields (keyword, boolean, long,
double) plus isr's own settings under ``_meta.isr``; an embedded index is one shard without
replicas, so its health is green. Documents have no versions: every one reads as version 1.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from isr.errors import InvalidInput, NotFound
from isr.plugin.filters import parse_filter
from isr.plugin.http.shapes import SHARDS

__all__ = ["CAT_COLUMNS", "cat_indices_rows", "human_bytes", "register_read_api"]

CAT_COLUMNS = (
    "health", "status", "index", "uuid", "pri", "rep", "docs.count", "docs.deleted",
    "store.size", "pri.store.size",
)  # fmt: skip
MAX_MGET = 10_000


def human_bytes(n: int) -> str:
    """Elasticsearch's byte sizes: 532b, 5.2kb, 12.3mb, 1.1gb."""
    for unit, step in (("tb", 2**40), ("gb", 2**30), ("mb", 2**20), ("kb", 2**10)):
        if n >= step:
            return f"{n / step:.1f}{unit}"
    return f"{n}b"


def _uuid(path: str) -> str:
    # stable per index directory (Elasticsearch's are random at creation; isr records none)
    return hashlib.sha256(path.encode()).hexdigest()[:22]


def _embedded(facade: Any, index: str) -> Any:
    from isr.plugin.embedded.index import EmbeddedIndex

    idx = facade.backend(index)
    assert isinstance(idx, EmbeddedIndex)
    return idx


def _mappings(idx: Any) -> dict[str, Any]:
    props = {f: {"type": t} for f, t in sorted(idx.fields.mapping.items())}
    for f in idx.config.stored_fields:  # kept in _source, not searchable (ES: index: false)
        props.setdefault(f, {"type": "text", "index": False})
    return {"_meta": {"isr": idx.config.to_json()}, "properties": props}


def _doc(index: str, doc_id: str, src: str | None, found: bool) -> dict[str, Any]:
    if not found:
        return {"_index": index, "_id": doc_id, "found": False}
    return {
        "_index": index,
        "_id": doc_id,
        "_version": 1,
        "_seq_no": 0,
        "_primary_term": 1,
        "found": True,
        "_source": json.loads(src) if src is not None else {},
    }


def get_docs(facade: Any, index: str, ids: list[str]) -> list[dict[str, Any]]:
    idx = _embedded(facade, index)
    rows = idx.rows_of(ids)
    docs = idx.docs_at([rows[i] for i in ids if i in rows])
    return [
        _doc(index, i, docs[rows[i]][1], True) if i in rows else _doc(index, i, None, False)
        for i in ids
    ]


def cat_indices_rows(facade: Any, names: list[str]) -> list[dict[str, str]]:
    out = []
    for name in names:
        st = _embedded(facade, name).stats()
        size = human_bytes(int(st["bytes_total"]))
        out.append(
            dict(
                zip(
                    CAT_COLUMNS,
                    ("green", "open", name, _uuid(st["path"]), "1", "0", str(st["documents"]),
                     str(st["deleted"]), size, size),
                    strict=True,
                )
            )
        )  # fmt: skip
    return out


def _cat_text(rows: list[dict[str, str]], cols: list[str], header: bool) -> str:
    table = ([cols] if header else []) + [[r[c] for c in cols] for r in rows]
    if not table:
        return ""
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    return "".join(
        " ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n"
        for line in table
    )


def _json(obj: Any, status: int = 200) -> Response:
    from isr.plugin.http.server import json_response

    return json_response(obj, status)


def _body(raw: bytes) -> Any:
    from isr.plugin.http.server import parse_json

    return parse_json(raw)


def _only(body: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput(f"{where}: expected a JSON object")
    bad = sorted(set(body) - set(keys))
    if bad:
        raise InvalidInput(f"{where}: unsupported key(s) {bad}; supported: {', '.join(keys)}")
    return body


def register_read_api(app: FastAPI, facade: Any) -> None:
    """Add the read endpoints to an embedded-mode facade app (before its catch-all route)."""
    from starlette.concurrency import run_in_threadpool

    def count(index: str, body: Any) -> Response:
        body = _only(body, ("query",), "count body")
        idx = _embedded(facade, index)
        try:
            tree = parse_filter(body.get("query"))
        except InvalidInput as e:
            raise InvalidInput(f"query: {e}") from None
        rows = idx.alive if tree is None else idx.alive & idx.filter_rows(tree)
        return _json({"count": len(rows), "_shards": SHARDS})

    @app.api_route("/{index}/_count", methods=["GET", "POST"])
    async def count_route(index: str, request: Request) -> Response:
        body = _body(await request.body())
        return await run_in_threadpool(count, index, body)

    @app.api_route("/{index}/_doc/{doc_id:path}", methods=["GET", "HEAD"])
    async def doc_route(index: str, doc_id: str, request: Request) -> Response:
        (got,) = await run_in_threadpool(get_docs, facade, index, [doc_id])
        status = 200 if got["found"] else 404
        if request.method == "HEAD":
            return Response(status_code=status)
        return _json(got, status)

    def mget(index: str | None, body: Any) -> Response:
        body = _only(body, ("docs", "ids"), "mget body")
        if "ids" in body:
            if index is None:
                raise InvalidInput("mget: ids need an index in the URL (/{index}/_mget)")
            wanted = [(index, i) for i in body["ids"]] if isinstance(body["ids"], list) else None
        elif isinstance(body.get("docs"), list):
            wanted = []
            for j, d in enumerate(body["docs"]):
                d = _only(d, ("_id", "_index", "_source"), f"mget docs[{j}]")
                where = d.get("_index", index)
                if where is None:
                    raise InvalidInput(f"mget docs[{j}]: no _index, and none in the URL")
                wanted.append((where, d.get("_id")))
        else:
            raise InvalidInput('mget: give "docs": [{"_id": ...}] or "ids": [...]')
        if wanted is None or not all(isinstance(i, str) and i for _, i in wanted):
            raise InvalidInput("mget: every _id must be a non-empty string")
        if len(wanted) > MAX_MGET:
            raise InvalidInput(f"mget: at most {MAX_MGET} documents per request")
        by_index: dict[str, list[str]] = {}
        for where, i in wanted:
            by_index.setdefault(where, []).append(i)
        found = {w: iter(get_docs(facade, w, ids)) for w, ids in by_index.items()}
        return _json({"docs": [next(found[w]) for w, _ in wanted]})

    @app.api_route("/_mget", methods=["GET", "POST"])
    async def mget_all(request: Request) -> Response:
        body = _body(await request.body())
        return await run_in_threadpool(mget, None, body)

    @app.api_route("/{index}/_mget", methods=["GET", "POST"])
    async def mget_route(index: str, request: Request) -> Response:
        body = _body(await request.body())
        return await run_in_threadpool(mget, index, body)

    def mapping(names: list[str]) -> Response:
        return _json({n: {"mappings": _mappings(_embedded(facade, n))} for n in names})

    @app.get("/_mapping")
    async def mapping_all() -> Response:
        names = await run_in_threadpool(facade.index_names)
        return await run_in_threadpool(mapping, names)

    @app.get("/{index}/_mapping")
    async def mapping_route(index: str) -> Response:
        return await run_in_threadpool(mapping, [index])

    def cat(index: str | None, params: dict[str, str]) -> Response:
        bad = sorted(set(params) - {"v", "format", "h", "pretty"})
        if bad:
            raise InvalidInput(
                f"_cat/indices: unsupported parameter(s) {bad}; supported: v, format, h"
            )
        names = facade.index_names() if index is None else [index]
        if index is not None:
            facade.backend(index)  # 404 for an unknown index
        rows = cat_indices_rows(facade, names)
        cols = list(CAT_COLUMNS)
        if params.get("h"):
            cols = [c.strip() for c in params["h"].split(",") if c.strip()]
            unknown = [c for c in cols if c not in CAT_COLUMNS]
            if unknown:
                raise InvalidInput(
                    f"_cat/indices: unknown column(s) {unknown}; known: {', '.join(CAT_COLUMNS)}"
                )
        fmt = params.get("format", "text")
        if fmt == "json":
            return _json([{c: r[c] for c in cols} for r in rows])
        if fmt != "text":
            raise InvalidInput(f"_cat/indices: format {fmt!r} is not text or json")
        text = _cat_text(rows, cols, "v" in params and params["v"] in ("", "true"))
        return Response(text, media_type="text/plain; charset=UTF-8")

    @app.get("/_cat/indices")
    async def cat_all(request: Request) -> Response:
        return await run_in_threadpool(cat, None, dict(request.query_params))

    @app.get("/_cat/indices/{index}")
    async def cat_one(index: str, request: Request) -> Response:
        return await run_in_threadpool(cat, index, dict(request.query_params))

    def get_index(index: str) -> Response:
        idx = _embedded(facade, index)
        st = idx.stats()
        settings = {"index": {"number_of_shards": "1", "number_of_replicas": "0",
                              "provided_name": index, "uuid": _uuid(st["path"])}}  # fmt: skip
        return _json({index: {"aliases": {}, "mappings": _mappings(idx), "settings": settings}})

    @app.api_route("/{index}", methods=["GET", "HEAD"])
    async def index_route(index: str, request: Request) -> Response:
        if index.startswith("_"):  # /_cat, /_isr, ...: not an index name
            from isr.plugin.http.server import NoHandler

            raise NoHandler(f"no handler found for uri [/{index}] and method [{request.method}]")
        if request.method == "HEAD":
            try:
                await run_in_threadpool(facade.backend, index)
            except NotFound:
                return Response(status_code=404)
            return Response(status_code=200)
        return await run_in_threadpool(get_index, index)
