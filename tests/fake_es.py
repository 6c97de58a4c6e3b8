"""A small in-memory stand-in for Elasticsearch, served over HTTP, for what the live test node
(tools/es/node.sh, tests/es) cannot show. Everything a healthy node answers is tested against that
node; real faults are provoked there too (429s from a one-thread write queue, mapping errors).
The fake stays for:

- **what Elasticsearch receives**: the requests and Authorization headers it records
  (`requests`, `auth`): the facade proxies one request as one and passes or replaces
  credentials, the loader sends its API key (tests/test_server_es.py, tests/test_ingest_es.py);
- **the rank_vectors layout**: the integ-test distribution lacks the rank-vectors and
  lang-painless modules, so the fake runs `script_score` with `dotProduct` /
  `maxSimDotProduct`, the query rescore and script fields (tests/test_es_backend.py,
  tests/test_ingest_es.py); the live suite checks that such a cluster refuses the layout;
- other engineers' tests that need some Elasticsearch without a node (the facade's read API,
  image queries, the browser UI: tests/test_read_api.py, test_image_query.py, test_server.py,
  test_ui_browser.py).

Semantics kept where they matter to isr: bool/term/terms/range/exists/match_all filters, a
top-level `knn` with `filter` as a pre-filter (scored (1 + dot) / 2, computed exactly),
`script_score` (negative scores are refused, as Lucene does), `global`/`filter` aggregations,
msearch, bulk (strict `isr` mapping errors), mget (realtime, `_source=false` honoured), count,
index stats (docs, store), settings, mapping updates (`_meta` replaced whole), point in time +
search_after on `_shard_doc`. Documents become searchable only after a refresh, as in
Elasticsearch.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from isr.plugin.http.server import serve_in_thread

JSON = "application/json"
_SCRIPT = re.compile(
    r"^(dotProduct|maxSimDotProduct)\(params\.(\w+), '([\w.]+)'\)(?: \+ (params\.(\w+)|[0-9.]+))?$"
)


class EsError(Exception):
    def __init__(self, status: int, es_type: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.es_type, self.reason = status, es_type, reason


def _get(doc: dict[str, Any], path: str) -> Any:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _values(doc: dict[str, Any], path: str) -> list[Any]:
    v = _get(doc, path)
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


class FakeEs:
    def __init__(self) -> None:
        self.indices: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.auth: list[str | None] = []  # the Authorization header of each request
        self.pits: dict[str, list[tuple[str, str]]] = {}
        self._pit_ids = itertools.count()

    # -- dispatch ------------------------------------------------------------------------
    async def endpoint(self, request: Request) -> Response:
        raw = await request.body()
        path, method = request.url.path, request.method
        with self.lock:
            self.requests.append((method, path))
            self.auth.append(request.headers.get("authorization"))
            try:
                status, body = self.handle(method, path, dict(request.query_params), raw)
            except EsError as e:
                cause = {"type": e.es_type, "reason": e.reason}
                status, body = (
                    e.status,
                    {"error": {"root_cause": [cause], **cause}, "status": e.status},
                )
        headers = {"x-elastic-product": "Elasticsearch"}
        if method == "HEAD":
            return Response(status_code=status, headers=headers)
        return Response(json.dumps(body), status_code=status, media_type=JSON, headers=headers)

    def handle(self, method: str, path: str, params: dict[str, str], raw: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        body = json.loads(raw) if raw.strip() and not path.endswith(("_bulk", "_msearch")) else None
        if not parts:
            return 200, {
                "name": "fake",
                "version": {"number": "9.1.0"},
                "tagline": "You Know, for Search",
            }
        if parts == ["_cluster", "health"]:
            return 200, {"cluster_name": "fake", "status": "green"}
        if parts == ["_nodes"]:  # a full distribution's modules (the real test node lacks some)
            mods = [{"name": m} for m in ("lang-painless", "rank-vectors", "x-pack-core")]
            return 200, {"nodes": {"n1": {"modules": mods, "plugins": []}}}
        if parts == ["_bulk"] or parts[-1:] == ["_bulk"]:
            return self.bulk(raw, params)
        if parts == ["_pit"] and method == "DELETE":
            self.pits.pop(body["id"], None)
            return 200, {"succeeded": True, "num_freed": 1}
        if parts == ["_search"]:
            return 200, self.search(None, body or {})
        name = parts[0]
        if len(parts) == 1:
            if method == "HEAD":
                return (200 if name in self.indices else 404), {}
            if method == "PUT":
                if name in self.indices:
                    raise EsError(
                        400, "resource_already_exists_exception", f"index [{name}] exists"
                    )
                self.indices[name] = {
                    "mappings": (body or {}).get("mappings", {}),
                    "docs": {},
                    "visible": {},
                }
                return 200, {"acknowledged": True, "index": name}
            if method == "DELETE":
                self._index(name)
                del self.indices[name]
                return 200, {"acknowledged": True}
        op = parts[1]
        if op == "_settings":  # flat: {"index.refresh_interval": ...}; null resets
            idx = self._index(name)
            st = idx.setdefault("settings", {"index.number_of_replicas": "1"})
            if method in ("PUT", "POST"):
                for k, v in ((body or {}).get("index") or {}).items():
                    if v is None:
                        st.pop(f"index.{k}", None)
                    else:
                        st[f"index.{k}"] = str(v)
                return 200, {"acknowledged": True}
            return 200, {name: {"settings": dict(st)}}
        if op == "_mapping" and method in ("PUT", "POST"):
            return 200, self.put_mapping(self._index(name), body or {})
        if op == "_mapping":
            return 200, {name: {"mappings": self._index(name)["mappings"]}}
        if op == "_stats":
            return 200, self.stats(name, parts[2:])
        if op == "_refresh":
            idx = self._index(name)
            idx["visible"] = dict(idx["docs"])
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if op == "_search":
            return 200, self.search(name, body or {})
        if op == "_msearch":
            lines = [json.loads(x) for x in raw.splitlines() if x.strip()]
            out = []
            for b in lines[1::2]:
                try:
                    out.append({**self.search(name, b), "status": 200})
                except EsError as e:
                    out.append(
                        {"error": {"type": e.es_type, "reason": e.reason}, "status": e.status}
                    )
            return 200, {"took": 1, "responses": out}
        if op == "_count":
            idx = self._index(name)
            q = (body or {}).get("query")
            return 200, {"count": sum(1 for d in idx["visible"].values() if self.match(q, d))}
        if op == "_pit":
            idx = self._index(name)
            pid = f"pit{next(self._pit_ids)}"
            self.pits[pid] = [(name, i) for i in sorted(idx["visible"])]
            return 200, {"id": pid}
        if op == "_doc" and len(parts) == 3:
            idx = self._index(name)
            doc = idx["docs"].get(parts[2])
            if method == "DELETE" and doc is not None:
                del idx["docs"][parts[2]]
                if params.get("refresh") in ("true", "wait_for", ""):
                    idx["visible"] = dict(idx["docs"])
            if doc is None:
                return 404, {"_index": name, "_id": parts[2], "found": False}
            return 200, {"_index": name, "_id": parts[2], "found": True, "_source": doc}
        if op == "_mget":
            idx = self._index(name)
            docs = []
            for i in body["ids"]:
                d = idx["docs"].get(i)
                if d is None:
                    docs.append({"_index": name, "_id": i, "found": False})
                    continue
                got = {"_index": name, "_id": i, "_version": 1, "found": True}
                if params.get("_source") != "false":
                    got["_source"] = self._filter_source(d, params)
                docs.append(got)
            return 200, {"docs": docs}
        raise EsError(400, "illegal_argument_exception", f"fake: no handler for {method} {path}")

    def _index(self, name: str) -> dict[str, Any]:
        if name not in self.indices:
            raise EsError(404, "index_not_found_exception", f"no such index [{name}]")
        return self.indices[name]

    @staticmethod
    def _filter_source(doc: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
        src = json.loads(json.dumps(doc))
        inc = params.get("_source_includes")
        if inc:
            keep: dict[str, Any] = {}
            for path in inc.split(","):
                v = _get(src, path)
                if v is not None:
                    cur = keep
                    *head, last = path.split(".")
                    for h in head:
                        cur = cur.setdefault(h, {})
                    cur[last] = v
            src = keep
        for path in filter(None, params.get("_source_excludes", "").split(",")):
            *head, last = path.split(".")
            parent = _get(src, ".".join(head)) if head else src
            if isinstance(parent, dict):
                parent.pop(last, None)
        return src

    @staticmethod
    def put_mapping(idx: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """`PUT /{index}/_mapping`: new properties are added (existing ones kept, as
        Elasticsearch refuses to change a field's type), `_meta` is replaced as a whole."""
        mappings = idx["mappings"]
        for key, value in body.items():
            if key == "properties":
                props = mappings.setdefault("properties", {})
                for field, spec in value.items():
                    if field in props and props[field].get("type") != spec.get("type"):
                        raise EsError(
                            400,
                            "illegal_argument_exception",
                            f"mapper [{field}] cannot be changed from type "
                            f"[{props[field].get('type')}] to [{spec.get('type')}]",
                        )
                    props.setdefault(field, spec)
            else:
                mappings[key] = json.loads(json.dumps(value))
        return {"acknowledged": True}

    def stats(self, name: str, metrics: list[str]) -> dict[str, Any]:
        """`GET /{index}/_stats[/{metric}]` with the `docs` and `store` sections (one primary
        shard, no replica); the store size is the JSON size of the indexed documents."""
        idx = self._index(name)
        size = sum(len(json.dumps(d)) for d in idx["docs"].values())
        section: dict[str, Any] = {}
        if not metrics or "docs" in metrics[0].split(","):
            section["docs"] = {"count": len(idx["visible"]), "deleted": 0}
        if not metrics or "store" in metrics[0].split(","):
            section["store"] = {
                "size_in_bytes": size,
                "total_data_set_size_in_bytes": size,
                "reserved_in_bytes": 0,
            }
        both = {"primaries": section, "total": json.loads(json.dumps(section))}
        return {
            "_shards": {"total": 2, "successful": 1, "failed": 0},
            "_all": both,
            "indices": {
                name: {"uuid": f"uuid-{name}", "health": "yellow", "status": "open", **both}
            },
        }

    # -- writes --------------------------------------------------------------------------
    def bulk(self, raw: bytes, params: dict[str, str]) -> tuple[int, Any]:
        lines = [json.loads(x) for x in raw.splitlines() if x.strip()]
        items, i = [], 0
        while i < len(lines):
            ((op, meta),) = lines[i].items()
            name, doc_id = meta["_index"], meta["_id"]
            idx = self._index(name)
            if op == "delete":
                i += 1
                found = idx["docs"].pop(doc_id, None) is not None
                items.append(
                    {
                        "delete": {
                            "_index": name,
                            "_id": doc_id,
                            "status": 200 if found else 404,
                            "result": "deleted" if found else "not_found",
                        }
                    }
                )
                continue
            src = lines[i + 1]
            i += 2
            err = self._mapping_error(idx, src)
            if err:
                items.append(
                    {
                        op: {
                            "_index": name,
                            "_id": doc_id,
                            "status": 400,
                            "error": {"type": "document_parsing_exception", "reason": err},
                        }
                    }
                )
                continue
            created = doc_id not in idx["docs"]
            idx["docs"][doc_id] = src
            items.append(
                {
                    op: {
                        "_index": name,
                        "_id": doc_id,
                        "status": 201 if created else 200,
                        "result": "created" if created else "updated",
                    }
                }
            )
        for name in {next(iter(it.values()))["_index"] for it in items}:
            if params.get("refresh") in ("true", "wait_for", ""):
                self.indices[name]["visible"] = dict(self.indices[name]["docs"])
        errors = any(next(iter(it.values()))["status"] >= 300 for it in items)
        return 200, {"took": 1, "errors": errors, "items": items}

    @staticmethod
    def _mapping_error(idx: dict[str, Any], src: dict[str, Any]) -> str:
        props = idx["mappings"].get("properties", {}).get("isr", {}).get("properties", {})
        own = src.get("isr", {})
        for key, value in own.items():
            spec = props.get(key)
            if spec is None:
                return f"strict mapping: [isr.{key}] not allowed"
            if spec["type"] == "dense_vector" and len(value) != spec["dims"]:
                return f"[isr.{key}] has {len(value)} dims, expected {spec['dims']}"
            if spec["type"] == "rank_vectors" and any(len(v) != spec["dims"] for v in value):
                return f"[isr.{key}] vectors must have {spec['dims']} dims"
        return ""

    # -- queries -------------------------------------------------------------------------
    def match(self, q: Any, doc: dict[str, Any]) -> bool:
        if q is None:
            return True
        if isinstance(q, list):
            return all(self.match(c, doc) for c in q)
        ((kind, spec),) = q.items()
        if kind == "match_all":
            return True
        if kind == "bool":
            as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
            ok = all(
                self.match(c, doc) for k in ("filter", "must") for c in as_list(spec.get(k, []))
            )
            should = as_list(spec.get("should", []))
            if should:
                msm = spec.get("minimum_should_match", 1)
                ok = ok and sum(self.match(c, doc) for c in should) >= msm
            return ok and not any(self.match(c, doc) for c in as_list(spec.get("must_not", [])))
        if kind == "exists":
            return bool(_values(doc, spec["field"]))
        if kind in ("term", "terms"):
            ((field, want),) = spec.items()
            if kind == "term":
                want = [want["value"] if isinstance(want, dict) else want]
            have = _values(doc, field)
            return any(h == w for h in have for w in want)
        if kind == "range":
            ((field, bounds),) = spec.items()
            have = [v for v in _values(doc, field) if isinstance(v, (int, float))]
            ops = {"gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}
            return any(all(ops[o](float(h), float(b)) for o, b in bounds.items()) for h in have)
        if kind == "script_score":
            return self.match(spec["query"], doc)
        raise EsError(400, "parsing_exception", f"fake: unknown query [{kind}]")

    def script(self, script: dict[str, Any], doc: dict[str, Any]) -> float:
        m = _SCRIPT.match(script["source"])
        if m is None:
            raise EsError(400, "script_exception", f"fake: cannot run {script['source']!r}")
        fn, qname, field, plus, pname = m.groups()
        params = script.get("params", {})
        q = np.asarray(params[qname], dtype=np.float64)
        v = _get(doc, field)
        if v is None:
            raise EsError(400, "script_exception", f"A document doesn't have a value for [{field}]")
        x = np.asarray(v, dtype=np.float64)
        s = float(x @ q) if fn == "dotProduct" else float((q @ x.T).max(axis=1).sum())
        if plus:
            s += float(params[pname]) if pname else float(plus)
        return s

    def search(self, name: str | None, body: dict[str, Any]) -> dict[str, Any]:
        if "pit" in body:
            return self._pit_page(body)
        idx = self._index(name)  # type: ignore[arg-type]
        docs = idx["visible"]
        size = body.get("size", 10)
        query = body.get("query")
        scored: list[tuple[float, str]] = []
        if "knn" in body:
            knn = body["knn"]
            q = np.asarray(knn["query_vector"], dtype=np.float64)
            pool = [(i, d) for i, d in docs.items() if self.match(knn.get("filter"), d)]
            cand = [((1 + float(np.asarray(_get(d, knn["field"])) @ q)) / 2, i) for i, d in pool]
            cand.sort(key=lambda t: (-t[0], t[1]))
            scored = cand[: knn["k"]]
        else:
            for i, d in docs.items():
                if not self.match(query, d):
                    continue
                if query is not None and "script_score" in query:
                    s = self.script(query["script_score"]["script"], d)
                    if s < 0:
                        raise EsError(
                            400, "illegal_argument_exception", "script score must not be negative"
                        )
                else:
                    s = 1.0 if query is None or "match_all" in query else 0.0
                scored.append((s, i))
            scored.sort(key=lambda t: (-t[0], t[1]))
        if "rescore" in body:
            r = body["rescore"]
            window = r["window_size"]
            rq = r["query"]
            head = []
            for s, i in scored[:window]:
                rs = self.script(rq["rescore_query"]["script_score"]["script"], docs[i])
                if rs < 0:
                    raise EsError(
                        400, "illegal_argument_exception", "script score must not be negative"
                    )
                head.append(
                    (rq.get("query_weight", 1.0) * s + rq.get("rescore_query_weight", 1.0) * rs, i)
                )
            head.sort(key=lambda t: (-t[0], t[1]))
            scored = head + scored[window:]
        total = len(scored)
        hits = [self._hit(name, i, s, docs[i], body) for s, i in scored[:size]]  # type: ignore[arg-type]
        out: dict[str, Any] = {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {"total": {"value": total, "relation": "eq"}, "max_score": None, "hits": hits},
        }
        if "aggs" in body:
            aggs: dict[str, Any] = {}
            matched = [d for d in docs.values() if self.match(query, d)]
            for key, spec in body["aggs"].items():
                if "global" in spec:
                    aggs[key] = {"doc_count": len(docs)}
                elif "filter" in spec:
                    aggs[key] = {
                        "doc_count": sum(1 for d in matched if self.match(spec["filter"], d))
                    }
            out["aggregations"] = aggs
        return out

    def _hit(
        self, name: str, i: str, score: float, doc: dict[str, Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        hit: dict[str, Any] = {"_index": name, "_id": i, "_score": score}
        src = body.get("_source", True)
        if src is not False:
            excludes = src.get("excludes", []) if isinstance(src, dict) else []
            hit["_source"] = {k: v for k, v in doc.items() if k not in excludes}
        fields: dict[str, Any] = {}
        for f in body.get("fields", []):
            vals = _values(doc, f)
            if vals:
                fields[f] = vals
        for key, spec in body.get("script_fields", {}).items():
            fields[key] = [self.script(spec["script"], doc)]
        if fields:
            hit["fields"] = fields
        return hit

    def _pit_page(self, body: dict[str, Any]) -> dict[str, Any]:
        pid = body["pit"]["id"]
        if pid not in self.pits:
            raise EsError(404, "search_context_missing_exception", "no such pit")
        entries = self.pits[pid]
        docs = [
            (n, i)
            for n, i in entries
            if self.match(body.get("query"), self.indices[n]["visible"][i])
        ]
        start = body["search_after"][0] + 1 if "search_after" in body else 0
        page = docs[start : start + body.get("size", 10)]
        hits = [
            {"_index": n, "_id": i, "_score": None, "sort": [start + k]}
            for k, (n, i) in enumerate(page)
        ]
        return {"pit_id": pid, "hits": {"hits": hits}}


serve = serve_in_thread  # one helper for the demo and the tests


def fake_es_app(fake: FakeEs) -> Starlette:
    methods = ["GET", "POST", "PUT", "DELETE", "HEAD"]
    return Starlette(routes=[Route("/{path:path}", fake.endpoint, methods=methods)])
