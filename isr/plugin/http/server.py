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
never authenticated), `GET /_isr/ready[/{index}]` (readiness, per index). Errors use
Elasticsearch's error shape, mapped from isr's exception classes in one table, :data:`ERRORS`;
an unexpected exception becomes a 500 in that shape and the connection stays usable.

Near-real-time search (embedded mode): every open index is refreshed every
`refresh_interval` seconds on a background thread (and on `POST /{index}/_refresh`); a
refresh publishes a new snapshot in one assignment, so searches never wait for it.

Security: binds 127.0.0.1 unless told otherwise, and then answers only requests whose Host
is a loopback name (DNS rebinding); request bodies must be JSON (415 otherwise: a browser
form cannot post one cross-site without a preflight); optional API key
(`Authorization: ApiKey <key>`); `serve` refuses a non-loopback bind without a key unless
`insecure`; error bodies never carry the server's paths; request bodies are capped.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sized
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import uvicorn
from elasticsearch import Elasticsearch
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from isr.encoders.record import Encoded
from isr.errors import Conflict, InvalidInput, IsrError, NotFound
from isr.plugin.backend import SearchBackend, TextEncoder, check_encoder
from isr.plugin.config import MANIFEST, index_name_problem
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.es.backend import EsBackend
from isr.plugin.filters import parse_filter
from isr.plugin.http.errors import (
    ERRORS,
    BadHost,
    BadMediaType,
    IndexNotFound,
    NoHandler,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    error_response,
    json_response,
    parse_json,
    scrub_paths,
)
from isr.plugin.http.read_api import register_read_api
from isr.plugin.http.shapes import (
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

__all__ = ["ERRORS", "BundleLoader", "ImageEncoder", "ServerConfig", "create_app", "serve"]

log = logging.getLogger("isr.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/_isr/health", "/_isr/ui")  # no API key: liveness probes; the page (no data)
URL_PARAMS = (
    "search_pipeline",
    "size",
    "from",
    "_source",
    "rest_total_hits_as_int",
    "pretty",
    "timeout",
)
IGNORED_PARAMS = ("error_trace", "human", "track_total_hits", "typed_keys")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
JSON_TYPES = (
    b"application/json",
    b"application/x-ndjson",
    b"application/vnd.elasticsearch+json",
    b"application/vnd.elasticsearch+x-ndjson",
)
TIME_UNITS = {
    "nanos": 1e-9,
    "micros": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
RETIRE_AFTER_S = 60.0  # a backend replaced by a reopen is closed this much later
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


class ImageEncoder(Protocol):
    """What `ext.isr.query_image` needs: an image file's bytes -> the encoded query
    (`isr.app.image_query.ImageQueries`: the bundle's own backbone, then its image tower)."""

    def encode_image_bytes(self, data: bytes) -> Encoded: ...


class BundleLoader(Protocol):
    """The app's loader of encoder bundles (the engine loads none itself; `isr.app.serve`
    has one): a bundle directory -> its text encoder, and that encoder -> its image encoder.
    The facade calls each once per directory and keeps the result per fingerprint."""

    def text_encoder(self, path: Path) -> TextEncoder: ...

    def image_encoder(self, path: Path, text: TextEncoder) -> ImageEncoder: ...


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """root: directory of embedded index directories; es_url: an Elasticsearch to front
    (exactly one of the two). sidecar_root: sidecar directories, one per Elasticsearch index
    name (needed for indexes whose fragments live in a sidecar). bundle: an encoder bundle
    for `query_text` / `query_image`, loaded on first use: optional, since each index records
    its own bundle (fingerprint and directory) and the facade loads the ones its indexes
    need; when given, it is used for every index whose fingerprint it has (an override of a
    recorded directory that moved), for indexes that record none, and for `_isr/embed`. api_key: required as `Authorization: ApiKey <key>`
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
    refresh_interval: float = 1.0  # seconds between refreshes of open indexes; -1: never
    insecure: bool = False  # allow a non-loopback bind without an API key
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides the loopback ones
    preload: bool = True  # embedded: EmbeddedIndex.preload on open (the maps prefaulted)

    def __post_init__(self) -> None:
        if (self.root is None) == (self.es_url is None):
            raise InvalidInput(
                "server: give exactly one of --root DIR (embedded indexes) and --es-url URL "
                "(Elasticsearch)"
            )
        if self.root is not None and not Path(self.root).is_dir():
            raise NotFound(f"server: index root {self.root} is not a directory")
        if self.bundle is not None and not Path(self.bundle).is_dir():
            raise NotFound(f"server: bundle directory {self.bundle} does not exist")
        port = self.port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidInput(f"server: --port must be an integer in [0, 65535], got {port!r}")
        if not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 1024:
            raise InvalidInput(
                f"server: the request body limit (--max-body-mb) must be at least 1024 bytes, "
                f"got {self.max_body_bytes}"
            )
        if self.api_key is not None and (not self.api_key or self.api_key != self.api_key.strip()):
            raise InvalidInput(
                "server: the API key (--api-key, ISR_API_KEY) must be non-empty, without spaces "
                "around it"
            )
        ri = self.refresh_interval
        if isinstance(ri, bool) or not isinstance(ri, (int, float)) or not (ri == -1 or ri > 0):
            raise InvalidInput(
                f"server: --refresh-interval must be > 0 s or -1 (never), got {ri!r}"
            )

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK

    @property
    def es_mode(self) -> bool:
        return self.es_url is not None


def check_index_name(name: str) -> str:
    """Elasticsearch's index-name rules (:func:`isr.plugin.config.index_name_problem`); they
    also keep names inside the index root."""
    why = index_name_problem(name)
    if why:
        raise InvalidInput(f"invalid index name [{name}]: {why}; one index per isr search")
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
        bundles: BundleLoader | None = None,
    ) -> None:
        self.config = config
        self._encoder = encoder  # given: every index's (tests, the demo)
        self.image_encoder = image_encoder
        self._bundles = bundles
        self._by_path: dict[Path, TextEncoder] = {}  # bundle directory -> its loaded encoder
        self._by_fp: dict[str, tuple[Path, TextEncoder]] = {}  # one load per fingerprint
        self._images: dict[str, ImageEncoder] = {}  # fingerprint -> its image encoder
        self._bundle_lock = threading.Lock()  # loading a bundle never blocks opening an index
        self._backends: dict[str, SearchBackend] = {}
        self._broken: dict[str, str] = {}  # index -> why its last refresh failed
        self._retired: list[tuple[float, SearchBackend]] = []
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._scorer: MaxSimScorer | None = None
        self.es = es_client
        if config.es_mode and self.es is None:
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
            path = Path(self.config.root) / name
            if not (path / MANIFEST).is_file():
                raise IndexNotFound(f"no such index [{name}]", name)
            index = EmbeddedIndex.open(path, readonly=True, device=self.config.device)
            if self.config.preload:
                index.preload()
            return index
        side = Path(self.config.sidecar_root) / name if self.config.sidecar_root else None
        try:
            return EsBackend.open(self.es, name, side, readonly=True, device=self.config.device)
        except NotFound as e:
            raise IndexNotFound(f"no such index [{name}] ({e})", name) from e

    def index_names(self) -> list[str]:
        assert self.config.root is not None
        root = Path(self.config.root)
        return sorted(
            p.name for p in root.iterdir() if (p / MANIFEST).is_file() and p.name == p.name.lower()
        )

    def encoder(self) -> TextEncoder:
        """The encoder of requests that name no index (`_isr/embed`, `_isr/rerank`): the
        given one, else --bundle's."""
        if self._encoder is not None:
            return self._encoder
        if self._bundles is None or self.config.bundle is None:
            raise Unavailable(
                "no text encoder: start `isr serve` with --bundle DIR, or send "
                "ext.isr.query_encoded instead of query_text"
            )
        return self._load(Path(self.config.bundle))

    def _load(self, path: Path) -> TextEncoder:
        """The bundle at `path`, loaded on first use (the facade starts at once), once."""
        assert self._bundles is not None
        key = path.resolve()
        with self._bundle_lock:
            got = self._by_path.get(key)
            if got is None:
                got = self._by_path[key] = self._bundles.text_encoder(key)
                self._by_fp.setdefault(got.fingerprint, (key, got))
            return got

    def encoder_for(self, backend: SearchBackend, index: str) -> TextEncoder:
        """The text encoder of `index`: the given one; else the bundle of the index's
        fingerprint, loaded once per fingerprint: --bundle when it is that bundle, else the
        directory the index records (its config, or the newest load's commit). An index
        whose bundle is nowhere here gets a 404 naming the bundle."""
        if self._encoder is not None:
            return self._encoder
        fp = backend.config.bundle_fingerprint
        if fp and fp in self._by_fp:
            return self._by_fp[fp][1]
        if self._bundles is None:
            raise Unavailable(
                f"no text encoder for index [{index}]: this facade loads no bundles; send "
                "ext.isr.query_encoded instead of query_text"
            )
        given = None if self.config.bundle is None else self._load(Path(self.config.bundle))
        if given is not None and (not fp or given.fingerprint == fp):
            return given
        if not fp:
            raise Unavailable(
                f"index [{index}] records no encoder bundle (pre-encoded features): start "
                "`isr serve` with --bundle DIR, or send ext.isr.query_encoded"
            )
        notes = []
        for path in _recorded_bundles(backend, fp):
            if not path.is_dir():
                notes.append(f"{path} does not exist")
                continue
            enc = self._load(path)
            if enc.fingerprint == fp:
                return enc
            notes.append(f"{path} is now bundle {enc.fingerprint[:12]}...")
        if given is not None:  # refused by the fingerprint check, naming both bundles
            return given
        where = "; ".join(notes) or "the index records no bundle directory"
        raise NotFound(
            f"index [{index}] was filled with encoder bundle {fp[:12]}..., which this server "
            f"cannot find ({where}): start `isr serve` with --bundle DIR (that bundle)"
        )

    def image_encoder_for(self, backend: SearchBackend, index: str) -> ImageEncoder:
        """The image encoder of `index` (the given one; else its bundle's, loaded once)."""
        if self.image_encoder is not None:
            return self.image_encoder
        text = None if self._bundles is None else self.encoder_for(backend, index)
        path = next((p for p, e in self._by_path.items() if e is text), None)
        if self._bundles is None or text is None or path is None:  # a given text encoder only
            raise Unavailable(
                "no image encoder: start `isr serve` with --bundle DIR (a bundle that "
                "records its image backbone) for ext.isr.query_image"
            )
        self._check_bundle(text, backend, index)
        fp = text.fingerprint
        with self._bundle_lock:
            got = self._images.get(fp)
            if got is None:
                got = self._images[fp] = self._bundles.image_encoder(path, text)
            return got

    def _check_bundle(self, enc: TextEncoder, backend: SearchBackend, index: str) -> None:
        check_encoder(enc, backend.config, index)

    def scorer(self) -> MaxSimScorer:
        if self._scorer is None:
            self._scorer = MaxSimScorer(self.config.device)
        return self._scorer

    def close(self) -> None:
        with self._lock:
            for b in [*self._backends.values(), *(b for _, b in self._retired)]:
                close = getattr(b, "close", None)
                if close is not None:
                    close()
            self._backends.clear()
            self._retired.clear()

    # -- refresh -------------------------------------------------------------------------
    def refresh(self, name: str | None = None) -> dict[str, Any]:
        """Catch the open indexes (or one) up with their writers' commits; Elasticsearch's
        `_refresh` answer. An index rewritten under the reader (compacted) is reopened."""
        if name is not None:
            self.backend(name)  # 404 for an unknown index; opens it (it is then current)
        with self._refresh_lock:
            names = [name] if name is not None else list(self._backends)
            failed = 0
            for n in names:
                b = self._backends.get(n)
                refresh = getattr(b, "refresh", None)
                if b is None or refresh is None or self.config.es_mode:
                    continue
                try:
                    try:
                        refresh()
                    except Conflict:  # rewritten (compacted): a fresh reader, the old retired
                        fresh = self._open(n)
                        with self._lock:
                            self._backends[n] = fresh
                            self._retired.append((time.monotonic(), b))
                    self._broken.pop(n, None)
                except IsrError as e:
                    failed += 1
                    self._broken[n] = str(e)
                    log.error("refreshing index [%s] failed: %s", n, e)
            self._close_retired()
        total = len(names)
        return {"_shards": {"total": total, "successful": total - failed, "failed": failed}}

    def forcemerge(self, name: str) -> dict[str, Any]:
        """Compact an embedded index (drops replaced and deleted rows), then reopen it here;
        Elasticsearch's `_forcemerge` answer plus the compaction's figures."""
        self.backend(name)  # 404 for an unknown index
        assert self.config.root is not None
        report = EmbeddedIndex.compact(Path(self.config.root) / name)
        self.refresh(name)  # the rewrite is seen: a fresh reader replaces the old one
        return {"_shards": {"total": 1, "successful": 1, "failed": 0}, "isr": report}

    def _close_retired(self) -> None:
        now = time.monotonic()
        while self._retired and now - self._retired[0][0] > RETIRE_AFTER_S:
            old = self._retired.pop(0)[1]
            close = getattr(old, "close", None)
            if close is not None:
                close()

    def refresh_forever(self, stop: threading.Event) -> None:
        """The background refresher (started by the app's lifespan)."""
        interval = self.config.refresh_interval
        while not stop.wait(interval):
            try:
                self.refresh()
            except Exception:  # never let the refresher die: the next round retries
                log.exception("background refresh failed")

    # -- handlers ------------------------------------------------------------------------
    def isr_search(self, index: str, body: Any, params: dict[str, str]) -> Response:
        t0 = time.perf_counter()
        backend = self.backend(index)
        req = parse_search(_apply_params(body, params))
        query, encode_ms = req.query, 0.0
        if req.query_image is not None:
            images = self.image_encoder_for(backend, index)
            self._check_bundle(images, backend, index)  # type: ignore[arg-type]
            t = time.perf_counter()
            query = images.encode_image_bytes(req.query_image)
            encode_ms = (time.perf_counter() - t) * 1e3
        elif query is None:
            assert req.query_text is not None
            enc = self.encoder_for(backend, index)
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
        t0 = time.perf_counter()
        req = parse_plain(_apply_params(body, params))
        idx = self.backend(index)
        assert isinstance(idx, EmbeddedIndex)
        tree = parse_filter(req.filter)
        snap = idx.snapshot  # one generation for the filter and the page
        rows = snap.alive if tree is None else snap.alive & idx.filter_rows(tree, snap)
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
        backend = None if index is None else self.backend(index)
        enc = self.encoder() if backend is None else self.encoder_for(backend, str(index))
        q = enc.encode_texts([query])
        qf, qm = q.fragments[0], q.mask[0]
        n_q = int(qm.sum())
        if index is None:  # documents are texts: the text tower on both sides
            d = enc.encode_texts(docs)
            ms = self.scorer().score(qf, qm, d.fragments, d.mask)
        else:  # documents are ids of an index: its stored fragments
            assert backend is not None
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

    def index_state(self, name: str) -> dict[str, Any]:
        """One index's readiness: green with its counts, or red with the reason."""
        try:
            b = self.backend(name)
        except IsrError as e:
            return {"status": "red", "reason": scrub_paths(str(e))}
        out: dict[str, Any] = {"status": "green", "documents": _count(b)}
        if hasattr(b, "generation"):
            out["generation"] = int(b.generation)
        if name in self._broken:
            out.update(status="yellow", reason=scrub_paths(self._broken[name]))
        return out

    def ready(self, index: str | None = None) -> Response:
        if index is not None:
            check_index_name(index)
            if self.config.root is not None and index not in self.index_names():
                raise IndexNotFound(f"no such index [{index}]", index)
            got = self.index_state(index)
            return json_response({index: got}, 200 if got["status"] != "red" else 503)
        state: dict[str, Any] = {"mode": "elasticsearch" if self.config.es_mode else "embedded"}
        try:
            if self.config.es_mode:
                # not ping(): `GET /` is a module (rest-root) some distributions lack (405)
                ok = _es_healthy(self.es)
                state["elasticsearch"] = "reachable" if ok else "unreachable"
            else:
                # one broken index is reported as red; it does not make the server unready
                per = {n: self.index_state(n) for n in self.index_names()}
                state["indices"] = {n: s["documents"] for n, s in per.items() if "documents" in s}
                state["index_status"] = per
                ok = True
        except IsrError as e:
            ok, state["reason"] = False, scrub_paths(str(e))
        state["encoder"] = (
            "loaded"
            if self._encoder is not None or self._by_fp
            else ("lazy" if self._bundles is not None else "none")
        )
        state["bundles"] = sorted(fp[:12] for fp in self._by_fp)  # loaded, one per fingerprint
        state["ready"] = ok
        return json_response(state, 200 if ok else 503)


def _recorded_bundles(backend: SearchBackend, fp: str) -> list[Path]:
    """The bundle directories an index records for fingerprint `fp`: the newest load's
    first (each commit of a load names its bundle's directory), then the index config's."""
    out: list[Path] = []
    # the embedded index's last commit, or what an Elasticsearch load commits beside its fragments
    meta = getattr(backend, "committed_meta", None) or getattr(backend, "app_meta", None)
    sources = (meta() if meta is not None else {}).get("ingest", {}).get("sources", [])
    for e in reversed(sources if isinstance(sources, list) else []):
        path = e.get("bundle_path") if isinstance(e, dict) and e.get("bundle") == fp else None
        if isinstance(path, str) and path and Path(path) not in out:
            out.append(Path(path))
    if backend.config.bundle_path and Path(backend.config.bundle_path) not in out:
        out.append(Path(backend.config.bundle_path))
    return out


def _es_healthy(es: Any) -> bool:
    """The cluster answers `_cluster/health` with yellow or green (any error: unhealthy)."""
    try:
        status = es.cluster.health(timeout="2s").get("status")
    except Exception:  # transport or API error: not ready, said in the answer
        return False
    return status in ("green", "yellow")


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


def parse_timeout(value: Any, where: str = "timeout") -> float | None:
    """Elasticsearch's time values ("500ms", "1s", "2m"; -1 or absent: none) -> seconds."""
    if value is None or value in (-1, "-1"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(nanos|micros|ms|s|m|h|d)", str(value).strip())
    if isinstance(value, bool) or m is None:
        raise InvalidInput(
            f"{where}: failed to parse [{value}] as a time value (a number and a unit: "
            f"{', '.join(TIME_UNITS)}, e.g. 500ms or 1s)"
        )
    return float(m.group(1)) * TIME_UNITS[m.group(2)]


def _timed_out(index: str, took_ms: float) -> Response:
    """Elasticsearch's answer when a search ran past its `timeout`: no hits, timed_out."""
    return json_response(
        {
            "took": round(took_ms),
            "timed_out": True,
            "_shards": {"total": 1, "successful": 0, "skipped": 0, "failed": 0},
            "hits": {"total": {"value": 0, "relation": "gte"}, "max_score": None, "hits": []},
        }
    )


def _host_name(host: bytes) -> str:
    h = host.decode("latin-1").strip().lower()
    if h.startswith("["):  # [::1]:9280
        return h[1 : h.index("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class _Guard:
    """Outermost layer: product header on every response, Host allow-list, JSON bodies only,
    API key, body size limit; and any exception that escapes the app becomes a 500 in
    Elasticsearch's shape here, not a re-raise that would drop the keep-alive connection."""

    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_body: int,
        hosts: tuple[str, ...] | None = None,
    ) -> None:
        self.app = app
        self.expected = f"ApiKey {api_key}".encode() if api_key else None
        self.max_body = max_body
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._call(scope, receive, send_tracked)
        except Exception as e:
            if started:  # half a response went out: nothing sound can follow on it
                raise
            resp = error_response(e)
            await resp(scope, receive, self._product(send_tracked))

    @staticmethod
    def _product(send: Send) -> Send:
        async def send_product(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    h for h in message.get("headers", []) if h[0].lower() != b"x-elastic-product"
                ]
                headers.append((b"x-elastic-product", b"Elasticsearch"))
                message = {**message, "headers": headers}
            await send(message)

        return send_product

    def _refuse(self, scope: Scope, headers: dict[bytes, bytes]) -> IsrError | None:
        if self.hosts is not None and _host_name(headers.get(b"host", b"")) not in self.hosts:
            return BadHost(
                "invalid Host header: a server bound to a loopback address answers only "
                "loopback host names (start it with --allowed-host NAME to add one)"
            )
        length = headers.get(b"content-length")
        has_body = (length is not None and length != b"0") or b"transfer-encoding" in headers
        ctype = headers.get(b"content-type")
        if has_body and ctype is not None:
            media = ctype.split(b";", 1)[0].strip().lower()
            if media not in JSON_TYPES:
                return BadMediaType(
                    f"Content-Type header [{ctype.decode('latin-1')}] is not supported; "
                    "send application/json"
                )
        return None

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        send_product = self._product(send)
        headers = dict(scope["headers"])
        refusal = self._refuse(scope, headers)
        if refusal is None and self.expected is not None and scope["path"] not in OPEN_PATHS:
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
    bundles: BundleLoader | None = None,
) -> FastAPI:
    """The facade as an ASGI app. encoder: the text encoder of `query_text` for every index
    (tests pass a small deterministic one); bundles: or the app's loader of bundles, with
    which each index's own bundle (and `config.bundle`) is loaded on first use; es_client: an
    Elasticsearch client to use instead of one built from `config.es_url`; image_encoder:
    for `ext.isr.query_image` on every index (else each bundle's, through `bundles`)."""
    if config.bundle is not None and encoder is None and bundles is None:
        raise InvalidInput(
            f"server: bundle {config.bundle} needs a loader (isr.app.serve.create_app has one)"
        )
    facade = Facade(config, encoder, es_client, image_encoder, bundles)
    proxy: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        nonlocal proxy
        if config.es_mode:
            proxy = httpx.AsyncClient(base_url=str(config.es_url), timeout=120.0)
        stop = threading.Event()
        refresher = None
        if not config.es_mode and config.refresh_interval != -1:
            refresher = threading.Thread(
                target=facade.refresh_forever, args=(stop,), name="isr-refresh", daemon=True
            )
            refresher.start()
        try:
            yield
        finally:
            stop.set()
            if refresher is not None:
                await run_in_threadpool(refresher.join, 30)
            if proxy is not None:
                await proxy.aclose()
            await run_in_threadpool(facade.close)

    app = FastAPI(title="isr", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.facade = facade
    hosts = (*LOOPBACK, *config.allowed_hosts) if config.loopback else None
    app.add_middleware(_Guard, api_key=config.api_key, max_body=config.max_body_bytes, hosts=hosts)

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

    @app.get("/_isr/ready/{index}")
    async def ready_index(index: str) -> Response:
        return await run_in_threadpool(facade.ready, index)

    async def bounded(index: str, timeout: float | None, fn: Any, *args: Any) -> Response:
        """Run a search in a worker thread; past `timeout`, answer timed_out (the thread's
        result is dropped when it ends)."""
        if timeout is None:
            return await run_in_threadpool(fn, *args)
        t0 = time.perf_counter()
        fut = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return _timed_out(index, (time.perf_counter() - t0) * 1e3)

    if not config.es_mode:

        @app.post("/_refresh")
        async def refresh_all() -> Response:
            return json_response(await run_in_threadpool(facade.refresh))

        @app.post("/{index}/_forcemerge")
        async def forcemerge(index: str) -> Response:
            return json_response(
                await run_in_threadpool(facade.forcemerge, check_index_name(index))
            )

        @app.api_route("/{index}/_refresh", methods=["GET", "POST"])
        async def refresh_index(index: str) -> Response:
            return json_response(await run_in_threadpool(facade.refresh, check_index_name(index)))

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
        if not isr and "search_pipeline" in params:
            raise InvalidInput(
                f"unknown search_pipeline [{params['search_pipeline']}]; this facade runs 'isr'"
            )
        body = parse_json(raw) if body is None else body
        given = params.get("timeout", body.get("timeout") if isinstance(body, dict) else None)
        timeout = parse_timeout(given)
        if isinstance(body, dict) and "timeout" in body:
            body = {k: v for k, v in body.items() if k != "timeout"}
        fn = facade.isr_search if isr else facade.plain_search
        return await bounded(index, timeout, fn, index, body, params)

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
    try:
        return version("isr")
    except PackageNotFoundError:
        return "0+unknown"


def check_exposure(config: ServerConfig) -> None:
    """A non-loopback bind without an API key lets anyone on the network search (and, in
    Elasticsearch mode, reach the cluster with the facade's credentials): refused unless
    `insecure`, and then warned about."""
    if config.loopback or config.api_key is not None:
        return
    if not config.insecure:
        raise InvalidInput(
            f"server: binding {config.host} (not a loopback address) without an API key; "
            "set --api-key (or ISR_API_KEY), or pass --insecure to serve without one"
        )
    log.warning(
        "serving on %s without an API key (--insecure): anyone who can reach it can use it",
        config.host,
    )


def serve(app: FastAPI, config: ServerConfig) -> None:
    """Run the facade `app` (see :func:`create_app`) with uvicorn until interrupted."""
    check_exposure(config)
    uvicorn.run(
        app,
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
