"""The HTTP facade: Elasticsearch's `_search` request and response shapes in front of isr.

Entry points: :func:`create_app(config, encoder=None) -> FastAPI` and :func:`serve(config)`
(`isr serve`). Two modes, chosen by :class:`ServerConfig`:

- embedded (`root`): every index directory under `root` is an index named after its directory.
  `/{index}/_search?search_pipeline=isr` runs the pipeline; a `_search` without it answers
  match_all and filter queries (term, terms, range, bool) in insertion order, with
  Elasticsearch's constant scores (1.0 for match_all, 0.0 in filter context) and no ranking;
  other queries and endpoints get a 400.
- Elasticsearch (`es_url`): the pipeline runs on :class:`~isr.plugin.es.backend.EsBackend`
  (fragments in the sidecar directory `sidecar_root/{index}` or in `rank_vectors`); every other
  request is proxied to Elasticsearch untouched.

A `_search` is an isr search when `search_pipeline=isr` is in its URL or, since the official
Python client (9.x) has no `search_pipeline` argument, when its body carries `ext.isr`
(Elasticsearch itself would refuse that body as an unknown search extension).

Also: the search page (`GET /_isr/ui`, :mod:`isr.plugin.http.ui`), Elasticsearch's read APIs
in embedded mode (`_count`, `_doc`, `_mget`, `_mapping`, `GET /{index}`, `_cat/indices`:
:mod:`isr.plugin.http.read_api`), `POST /_isr/rerank[/{index}]` and `POST /_isr/embed` in the JSON shapes the `custom`
inference service is configured with (docs/elasticsearch.md), `GET /_isr/health` (liveness,
never authenticated), `GET /_isr/ready` (readiness). Errors use Elasticsearch's error shape,
mapped from isr's exception classes in one table, :data:`ERRORS`. Binds 127.0.0.1 unless told
otherwise; optional API key (`Authorization: ApiKey <key>`); request bodies are capped.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence, Sized
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from isr.encoders.record import Encoded
from isr.errors import Conflict, CorruptIndex, InvalidInput, IsrError, NotFound
from isr.plugin.backend import SearchBackend
from isr.plugin.http.read_api import register_read_api
from isr.plugin.http.shapes import (
    error_body,
    parse_embed,
    parse_plain,
    parse_rerank,
    parse_search,
    render_embed,
    render_plain,
    render_rerank,
    render_search,
)
from isr.plugin.http.ui import html, register_ui, wants_html
from isr.plugin.pipeline import search
from isr.plugin.store.maxsim import MaxSimScorer

__all__ = ["ERRORS", "ImageEncoder", "ServerConfig", "TextEncoder", "create_app", "serve"]

log = logging.getLogger("isr.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/_isr/health", "/_isr/ui")  # no API key: liveness probes; the page (no data)
URL_PARAMS = ("search_pipeline", "size", "from", "_source", "rest_total_hits_as_int", "pretty")
IGNORED_PARAMS = ("error_trace", "human", "timeout", "track_total_hits", "typed_keys")
INDEX_FORBIDDEN = set('\\/*?"<>| ,#:')
HOP_BY_HOP = {
    b"host",
    b"content-length",
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-authorization",
    b"proxy-connection",
}


class TextEncoder(Protocol):
    """What the facade needs of a model: `isr.encoders.bundle.Bundle` has it."""

    def encode_texts(self, texts: Sequence[str]) -> Encoded: ...


class ImageEncoder(Protocol):
    """What `ext.isr.query_image` needs: an image file's bytes -> the encoded query
    (`isr.app.image_query.ImageQueries`: the bundle's own backbone, then its image tower)."""

    def encode_image_bytes(self, data: bytes) -> Encoded: ...


# -- errors: the facade's own kinds, and the one table that maps every kind to a status -----


class IndexNotFound(NotFound):
    """The index named in the URL does not exist."""


class BadJson(InvalidInput):
    """The request body is not UTF-8 JSON."""


class PayloadTooLarge(InvalidInput):
    """The request body exceeds the configured limit."""


class Unauthorized(IsrError):
    """Missing or wrong API key."""


class Unavailable(IsrError):
    """A dependency is missing or down: no text encoder configured, Elasticsearch unreachable."""


class NoHandler(InvalidInput):
    """No endpoint for this method and path."""


# most specific first: the first class an exception is an instance of decides
ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (IndexNotFound, 404, "index_not_found_exception"),
    (BadJson, 400, "x_content_parse_exception"),
    (PayloadTooLarge, 413, "content_too_long_exception"),
    (NoHandler, 400, "illegal_argument_exception"),
    (InvalidInput, 400, "illegal_argument_exception"),
    (NotFound, 404, "resource_not_found_exception"),
    (Conflict, 409, "status_exception"),
    (Unauthorized, 401, "security_exception"),
    (Unavailable, 503, "status_exception"),
    (CorruptIndex, 500, "corrupt_index_exception"),
    (IsrError, 500, "exception"),
)


def _dumps(obj: Any, pretty: bool = False) -> bytes:
    # orjson: a query's vectors and a page of hits are parsed and written ~10x faster than
    # with the json module, a visible share of the facade's per-request cost.
    out: bytes = orjson.dumps(obj, option=orjson.OPT_INDENT_2 if pretty else 0)
    return out


def json_response(obj: Any, status: int = 200, pretty: bool = False) -> Response:
    return Response(_dumps(obj, pretty), status_code=status, media_type="application/json")


def error_response(exc: BaseException) -> Response:
    """The one place an exception becomes a status code and Elasticsearch's error shape."""
    for cls, status, es_type in ERRORS:
        if isinstance(exc, cls):
            named = isinstance(exc, IndexNotFound) and len(exc.args) > 1
            extra = {"index": exc.args[1]} if named else {}
            reason = str(exc.args[0]) if exc.args else type(exc).__name__
            resp = json_response(error_body(status, es_type, reason, **extra), status)
            if isinstance(exc, Unauthorized):
                resp.headers["www-authenticate"] = 'ApiKey, Basic realm="isr"'
            return resp
    log.exception("unexpected error", exc_info=exc)
    return json_response(
        error_body(500, "exception", f"internal error ({type(exc).__name__}); see the log"), 500
    )


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """root: directory of embedded index directories; es_url: an Elasticsearch to front
    (exactly one of the two). sidecar_root: sidecar directories, one per Elasticsearch index
    name (needed for indexes whose fragments live in a sidecar). bundle: encoder bundle for
    `query_text`, loaded on first use. api_key: required as `Authorization: ApiKey <key>`
    when set. es_api_key: the facade's own credentials for Elasticsearch."""

    root: Path | None = None
    es_url: str | None = None
    es_api_key: str | None = None
    sidecar_root: Path | None = None
    bundle: Path | None = None
    host: str = "127.0.0.1"
    port: int = 9280
    api_key: str | None = None
    max_body_bytes: int = 16 * 2**20
    device: str | None = None

    def __post_init__(self) -> None:
        if (self.root is None) == (self.es_url is None):
            raise InvalidInput("server: give exactly one of root (embedded) and es_url")
        if self.root is not None and not Path(self.root).is_dir():
            raise NotFound(f"server: index root {self.root} is not a directory")
        if self.bundle is not None and not Path(self.bundle).is_dir():
            raise NotFound(f"server: bundle directory {self.bundle} does not exist")
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidInput(f"server: port must be an integer in [0, 65535], got {port!r}")
        if not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 1024:
            raise InvalidInput(f"server: max_body_bytes must be >= 1024, got {self.max_body_bytes}")
        if self.api_key is not None and (not self.api_key or self.api_key != self.api_key.strip()):
            raise InvalidInput("server: api_key must be a non-empty string without spaces around")

    @property
    def es_mode(self) -> bool:
        return self.es_url is not None


def check_index_name(name: str) -> str:
    """Elasticsearch's index-name rules; they also keep names inside the index root."""
    if (
        not name
        or name in (".", "..")
        or name[0] in "_-+"
        or name != name.lower()
        or set(name) & INDEX_FORBIDDEN
        or len(name.encode()) > 255
    ):
        raise InvalidInput(
            f"invalid index name [{name}]: lowercase, not starting with _ - +, none of "
            f"{''.join(sorted(INDEX_FORBIDDEN))!r}, at most 255 bytes; one index per isr search"
        )
    return name


# -- the facade's state and its synchronous work (run in worker threads) --------------------


class Facade:
    """Open backends, the lazily loaded encoder, and the handlers' synchronous bodies."""

    def __init__(
        self,
        config: ServerConfig,
        encoder: TextEncoder | None = None,
        es_client: Any = None,
        image_encoder: ImageEncoder | None = None,
    ) -> None:
        self.config = config
        self._encoder = encoder
        self.image_encoder = image_encoder
        self._backends: dict[str, SearchBackend] = {}
        self._lock = threading.Lock()
        self._scorer: MaxSimScorer | None = None
        self.es = es_client
        if config.es_mode and self.es is None:
            from elasticsearch import Elasticsearch

            self.es = Elasticsearch(config.es_url, api_key=config.es_api_key)

    # -- resources -----------------------------------------------------------------------
    def backend(self, name: str) -> SearchBackend:
        got = self._backends.get(name)
        if got is not None:
            return got
        check_index_name(name)
        with self._lock:
            if name not in self._backends:
                self._backends[name] = self._open(name)
            return self._backends[name]

    def _open(self, name: str) -> SearchBackend:
        if self.config.root is not None:
            from isr.plugin.config import MANIFEST
            from isr.plugin.embedded.index import EmbeddedIndex

            path = Path(self.config.root) / name
            if not (path / MANIFEST).is_file():
                raise IndexNotFound(f"no such index [{name}]", name)
            return EmbeddedIndex.open(path, readonly=True, device=self.config.device)
        from isr.plugin.es.backend import EsBackend

        side = Path(self.config.sidecar_root) / name if self.config.sidecar_root else None
        try:
            return EsBackend.open(self.es, name, side, readonly=True, device=self.config.device)
        except NotFound as e:
            raise IndexNotFound(f"no such index [{name}] ({e})", name) from e

    def index_names(self) -> list[str]:
        from isr.plugin.config import MANIFEST

        assert self.config.root is not None
        root = Path(self.config.root)
        return sorted(
            p.name for p in root.iterdir() if (p / MANIFEST).is_file() and p.name == p.name.lower()
        )

    def encoder(self) -> TextEncoder:
        if self._encoder is not None:
            return self._encoder
        if self.config.bundle is None:
            raise Unavailable(
                "no text encoder: start `isr serve` with --bundle DIR, or send "
                "ext.isr.query_encoded instead of query_text"
            )
        with self._lock:
            if self._encoder is None:
                import torch

                from isr.encoders.bundle import Bundle

                # the scorer's rule: the configured device, else CUDA when there is one
                device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
                self._encoder = Bundle.load(self.config.bundle, device=device)
            return self._encoder

    def _check_bundle(self, enc: TextEncoder, backend: SearchBackend, index: str) -> None:
        have = getattr(enc, "fingerprint", "")
        want = backend.config.bundle_fingerprint
        if have and want and have != want:
            raise Conflict(
                f"index [{index}] was filled with encoder bundle {want[:12]}..., this facade "
                f"runs bundle {have[:12]}...; start it with the index's bundle"
            )

    def scorer(self) -> MaxSimScorer:
        if self._scorer is None:
            self._scorer = MaxSimScorer(self.config.device)
        return self._scorer

    def close(self) -> None:
        with self._lock:
            for b in self._backends.values():
                close = getattr(b, "close", None)
                if close is not None:
                    close()
            self._backends.clear()

    # -- handlers ------------------------------------------------------------------------
    def isr_search(self, index: str, body: Any, params: dict[str, str]) -> Response:
        t0 = time.perf_counter()
        backend = self.backend(index)
        req = parse_search(_apply_params(body, params))
        query, encode_ms = req.query, 0.0
        if req.query_image is not None:
            if self.image_encoder is None:
                raise Unavailable(
                    "no image encoder: start `isr serve` with --bundle DIR (a bundle that "
                    "records its image backbone) for ext.isr.query_image"
                )
            self._check_bundle(self.image_encoder, backend, index)  # type: ignore[arg-type]
            t = time.perf_counter()
            query = self.image_encoder.encode_image_bytes(req.query_image)
            encode_ms = (time.perf_counter() - t) * 1e3
        elif query is None:
            assert req.query_text is not None
            enc = self.encoder()
            self._check_bundle(enc, backend, index)
            t = time.perf_counter()
            query = enc.encode_texts([req.query_text])
            encode_ms = (time.perf_counter() - t) * 1e3
        result = search(backend, query, req.options)
        took = (time.perf_counter() - t0) * 1e3
        as_int = _flag(params, "rest_total_hits_as_int")
        out = render_search(index, req, result, took, encode_ms, as_int)
        return json_response(out, pretty="pretty" in params)

    def plain_search(self, index: str, body: Any, params: dict[str, str]) -> Response:
        from isr.plugin.embedded.index import EmbeddedIndex
        from isr.plugin.filters import parse_filter

        t0 = time.perf_counter()
        req = parse_plain(_apply_params(body, params))
        idx = self.backend(index)
        assert isinstance(idx, EmbeddedIndex)
        tree = parse_filter(req.filter)
        rows = idx.alive if tree is None else idx.alive & idx.filter_rows(tree)
        page = [int(r) for r in rows[req.start : req.start + req.size]] if req.size else []
        docs = idx.docs_at(page)
        found = []
        for r in page:
            doc_id, src = docs[r]
            found.append((doc_id, json.loads(src) if src is not None else None))
        took = (time.perf_counter() - t0) * 1e3
        out = render_plain(
            index, req, found, len(rows), took, _flag(params, "rest_total_hits_as_int")
        )
        return json_response(out, pretty="pretty" in params)

    def rerank(self, body: Any, index: str | None) -> Response:
        query, docs, top_n = parse_rerank(body)
        enc = self.encoder()
        q = enc.encode_texts([query])
        qf, qm = q.fragments[0], q.mask[0]
        n_q = int(qm.sum())
        if index is None:  # documents are texts: the text tower on both sides
            d = enc.encode_texts(docs)
            ms = self.scorer().score(qf, qm, d.fragments, d.mask)
        else:  # documents are ids of an index: its stored fragments
            backend = self.backend(index)
            self._check_bundle(enc, backend, index)
            if q.d_frag != backend.config.d_frag:
                raise InvalidInput(
                    f"the encoder's fragments have {q.d_frag} dims, index [{index}] has "
                    f"{backend.config.d_frag}"
                )
            rows_of = getattr(backend, "rows_of", None)
            if rows_of is None:
                raise InvalidInput(f"index [{index}] cannot look fragments up by id")
            rows = rows_of(docs)
            ms = np.full(len(docs), -float(n_q), np.float32)  # unknown ids: the lowest score
            known = [i for i, d in enumerate(docs) if d in rows]
            if known:
                keys = np.array([rows[docs[i]] for i in known], dtype=np.int64)
                ms[known] = backend.score_keys(qf, qm, keys)
        # (max-sim + n_q) / (2 n_q) maps [-n_q, n_q] onto [0, 1], keeping the order: rerank
        # scores become document scores in Elasticsearch, which must not be negative.
        scores = ((ms + n_q) / (2 * n_q)).astype(float).tolist()
        return json_response(render_rerank(scores, top_n))

    def embed(self, body: Any) -> Response:
        texts = parse_embed(body)
        enc = self.encoder().encode_texts(texts)
        return json_response(render_embed(np.round(enc.fast.astype(float), 7).tolist()))

    def ready(self) -> Response:
        state: dict[str, Any] = {"mode": "elasticsearch" if self.config.es_mode else "embedded"}
        try:
            if self.config.es_mode:
                ok = bool(self.es.ping())
                state["elasticsearch"] = "reachable" if ok else "unreachable"
            else:
                state["indices"] = {n: _count(self.backend(n)) for n in self.index_names()}
                ok = True
        except IsrError as e:
            ok, state["reason"] = False, str(e)
        state["encoder"] = (
            "loaded"
            if self._encoder is not None
            else ("lazy" if self.config.bundle is not None else "none")
        )
        state["ready"] = ok
        return json_response(state, 200 if ok else 503)


def _count(backend: SearchBackend) -> int:
    return len(backend) if isinstance(backend, Sized) else -1


def _flag(params: dict[str, str], name: str) -> bool:
    return name in params and params[name] in ("", "true")


def _apply_params(body: Any, params: dict[str, str]) -> Any:
    """URL parameters that Elasticsearch also takes in the body: the URL's win."""
    bad = sorted(set(params) - set(URL_PARAMS) - set(IGNORED_PARAMS))
    if bad:
        raise InvalidInput(
            f"request contains unrecognized parameter(s) {bad}; supported: "
            f"{', '.join(URL_PARAMS + IGNORED_PARAMS)}"
        )
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for key in ("size", "from"):
        if key in params:
            try:
                out[key] = int(params[key])
            except ValueError:
                raise InvalidInput(f"{key} must be an integer, got {params[key]!r}") from None
    if "_source" in params:
        if params["_source"] not in ("true", "false"):
            raise InvalidInput(f"_source must be true or false, got {params['_source']!r}")
        out["_source"] = params["_source"] == "true"
    return out


def parse_json(raw: bytes) -> Any:
    """A request body as JSON: strict UTF-8, no NaN/Infinity (Elasticsearch refuses them)."""
    if not raw.strip():
        return {}
    try:
        raw.decode("utf-8")  # for a message that names the offending byte
    except UnicodeDecodeError as e:
        raise BadJson(f"request body is not valid UTF-8 (byte {e.start})") from None
    try:
        return orjson.loads(raw)  # strict: no NaN/Infinity, depth limit 1024
    except orjson.JSONDecodeError as e:
        raise BadJson(f"request body is not valid JSON: {e}") from None


def _wants_isr(params: dict[str, str], raw: bytes) -> tuple[bool, Any]:
    """Is this `_search` for the isr pipeline? Returns (yes, parsed body or None)."""
    pipeline = params.get("search_pipeline")
    if pipeline == "isr":
        return True, parse_json(raw)
    if pipeline is not None:
        return False, None
    if b'"isr"' not in raw:  # cheap test before parsing a body that will be proxied
        return False, None
    body = parse_json(raw)
    ext = body.get("ext") if isinstance(body, dict) else None
    return isinstance(ext, dict) and "isr" in ext, body


# -- ASGI ------------------------------------------------------------------------------------


class _Guard:
    """Outermost layer: product header on every response, API key, body size limit."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.expected = f"ApiKey {api_key}".encode() if api_key else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_product(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"x-elastic-product"]
                headers.append((b"x-elastic-product", b"Elasticsearch"))
                message = {**message, "headers": headers}
            await send(message)

        headers = dict(scope["headers"])
        refusal: IsrError | None = None
        if self.expected is not None and scope["path"] not in OPEN_PATHS:
            got = headers.get(b"authorization", b"")
            scheme, _, key = got.partition(b" ")
            if not (
                scheme.lower() == b"apikey"
                and hmac.compare_digest(b"ApiKey " + key.strip(), self.expected)
            ):
                refusal = Unauthorized(
                    "missing or wrong API key (send Authorization: ApiKey <key>)"
                )
        length = headers.get(b"content-length")
        if refusal is None and length is not None:
            if not length.isdigit():
                refusal = InvalidInput("content-length is not a number")
            elif int(length) > self.max_body:
                refusal = PayloadTooLarge(
                    f"request body of {int(length)} bytes exceeds the limit of {self.max_body}"
                )
        if refusal is not None:
            await error_response(refusal)(scope, receive, send_product)
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise PayloadTooLarge(f"request body exceeds the limit of {self.max_body}")
            return message

        await self.app(scope, receive_limited, send_product)


def create_app(
    config: ServerConfig,
    encoder: TextEncoder | None = None,
    es_client: Any = None,
    image_encoder: ImageEncoder | None = None,
) -> FastAPI:
    """The facade as an ASGI app. encoder: used for `query_text` instead of loading
    `config.bundle` (tests pass a small deterministic one); es_client: an Elasticsearch
    client to use instead of one built from `config.es_url`; image_encoder: for
    `ext.isr.query_image` (the app layer builds it from the bundle)."""
    import httpx

    facade = Facade(config, encoder, es_client, image_encoder)
    proxy: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        nonlocal proxy
        if config.es_mode:
            proxy = httpx.AsyncClient(base_url=str(config.es_url), timeout=120.0)
        try:
            yield
        finally:
            if proxy is not None:
                await proxy.aclose()
            await run_in_threadpool(facade.close)

    app = FastAPI(title="isr", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.facade = facade
    app.add_middleware(_Guard, api_key=config.api_key, max_body=config.max_body_bytes)

    @app.exception_handler(IsrError)
    async def _isr_error(request: Request, exc: IsrError) -> Response:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _any_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(NoHandler(f"{exc.detail} for uri [{request.url.path}]"))

    async def forward(request: Request, raw: bytes) -> Response:
        assert proxy is not None
        target = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        if request.url.query:
            target += "?" + request.url.query
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in HOP_BY_HOP]
        if config.api_key is not None:  # the facade authenticated: use its own credentials
            headers = [(k, v) for k, v in headers if k.lower() != b"authorization"]
            if config.es_api_key:
                headers.append((b"authorization", f"ApiKey {config.es_api_key}".encode()))
        try:
            r = await proxy.request(request.method, target, content=raw, headers=headers)
        except httpx.HTTPError as e:
            raise Unavailable(f"Elasticsearch at {config.es_url} did not answer: {e}") from e
        resp = Response(r.content, status_code=r.status_code)
        drop = HOP_BY_HOP | {b"content-encoding"}
        resp.raw_headers = [(k, v) for k, v in r.headers.raw if k.lower() not in drop] + [
            (b"content-length", str(len(r.content)).encode())
        ]
        return resp

    @app.get("/_isr/health")
    async def health() -> Response:
        return json_response({"status": "up"})

    @app.get("/_isr/ready")
    async def ready() -> Response:
        return await run_in_threadpool(facade.ready)

    @app.post("/_isr/rerank")
    async def rerank(request: Request) -> Response:
        body = parse_json(await request.body())
        return await run_in_threadpool(facade.rerank, body, None)

    @app.post("/_isr/rerank/{index}")
    async def rerank_index(index: str, request: Request) -> Response:
        body = parse_json(await request.body())
        return await run_in_threadpool(facade.rerank, body, index)

    @app.post("/_isr/embed")
    async def embed(request: Request) -> Response:
        body = parse_json(await request.body())
        return await run_in_threadpool(facade.embed, body)

    @app.api_route("/{index}/_search", methods=["GET", "POST"])
    async def search_route(index: str, request: Request) -> Response:
        raw = await request.body()
        params = dict(request.query_params)
        isr, body = _wants_isr(params, raw)
        if config.es_mode and not isr:
            return await forward(request, raw)
        if isr:
            return await run_in_threadpool(facade.isr_search, index, body, params)
        if "search_pipeline" in params:
            raise InvalidInput(
                f"unknown search_pipeline [{params['search_pipeline']}]; this facade runs 'isr'"
            )
        body = parse_json(raw) if body is None else body
        return await run_in_threadpool(facade.plain_search, index, body, params)

    @app.api_route("/", methods=["GET", "HEAD"])
    async def root(request: Request) -> Response:
        if request.method == "GET" and wants_html(request.headers.get("accept", "")):
            return html()  # a browser: the search page
        if config.es_mode:
            return await forward(request, await request.body())
        return json_response(
            {
                "name": "isr",
                "cluster_name": "isr-embedded",
                "version": {"number": _version(), "distribution": "isr"},
                "tagline": "You Know, for Search",
            }
        )

    @app.get("/_isr/indices")
    async def indices() -> Response:
        if config.es_mode:
            raise NoHandler("index listing is Elasticsearch's own in ES mode (GET /_cat/indices)")
        return json_response({"indices": await run_in_threadpool(facade.index_names)})

    register_ui(app, facade)
    if not config.es_mode:  # in Elasticsearch mode the cluster answers these (proxied below)
        register_read_api(app, facade)

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]

    @app.api_route("/{path:path}", methods=methods)
    async def other(path: str, request: Request) -> Response:
        if config.es_mode:
            return await forward(request, await request.body())
        raise NoHandler(f"no handler found for uri [/{path}] and method [{request.method}]")

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("isr")
    except PackageNotFoundError:
        return "0+unknown"


def serve(
    config: ServerConfig,
    encoder: TextEncoder | None = None,
    image_encoder: ImageEncoder | None = None,
) -> None:
    """Run the facade with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(config, encoder, image_encoder=image_encoder),
        host=config.host,
        port=config.port,
        log_level="info",
        access_log=False,
        timeout_keep_alive=75,  # clients pool connections; uvicorn's 5 s default drops them
    )


@contextmanager
def serve_in_thread(app: FastAPI, port: int = 0) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a daemon thread on 127.0.0.1 (a free port by default);
    yields its base URL and stops the server on exit. For the demo and the tests."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the facade did not start within 30 s")
        time.sleep(0.02)
    host, bound = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
