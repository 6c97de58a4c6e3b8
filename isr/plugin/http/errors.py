"""The facade's error kinds, the one table that maps every kind to an HTTP status and
Elasticsearch's error type, and the JSON bodies in and out (shared by the routes of
:mod:`isr.plugin.http.server` and :mod:`isr.plugin.http.read_api`).

Entry points: :data:`ERRORS`, :func:`error_response`, :func:`json_response`, :func:`parse_json`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from fastapi.responses import Response

from isr.errors import Conflict, CorruptIndex, InvalidInput, IsrError, NotFound
from isr.plugin.http.shapes import error_body

__all__ = [
    "ERRORS",
    "BadHost",
    "BadJson",
    "BadMediaType",
    "IndexNotFound",
    "NoHandler",
    "PayloadTooLarge",
    "Unauthorized",
    "Unavailable",
    "error_response",
    "json_response",
    "parse_json",
    "scrub_paths",
]

log = logging.getLogger("isr.server")


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


class BadMediaType(InvalidInput):
    """The request body is not declared as JSON."""


class BadHost(InvalidInput):
    """The Host header names no allowed host (a loopback-bound server answers loopback names)."""


# most specific first: the first class an exception is an instance of decides
ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (IndexNotFound, 404, "index_not_found_exception"),
    (BadJson, 400, "x_content_parse_exception"),
    (PayloadTooLarge, 413, "content_too_long_exception"),
    (BadMediaType, 415, "media_type_header_exception"),
    (BadHost, 400, "illegal_argument_exception"),
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


_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.+@=-]+/)*[\w.+@=-]+")


def scrub_paths(text: str) -> str:
    """Error reasons without the server's file system: an absolute path keeps its last
    two parts (the index and the file), which is what a client can act on."""

    def short(m: re.Match[str]) -> str:
        parts = m.group(0).strip("/").split("/")
        return "/".join(parts[-2:]) if len(parts) > 1 else m.group(0)

    return _PATH.sub(short, text)


def error_response(exc: BaseException) -> Response:
    """The one place an exception becomes a status code and Elasticsearch's error shape."""
    for cls, status, es_type in ERRORS:
        if isinstance(exc, cls):
            named = isinstance(exc, IndexNotFound) and len(exc.args) > 1
            extra = {"index": exc.args[1]} if named else {}
            reason = str(exc.args[0]) if exc.args else type(exc).__name__
            if status >= 500:
                log.error("%s: %s", type(exc).__name__, reason)
            reason = scrub_paths(reason)
            resp = json_response(error_body(status, es_type, reason, **extra), status)
            if isinstance(exc, Unauthorized):
                resp.headers["www-authenticate"] = 'ApiKey realm="isr"'
            return resp
    log.exception("unexpected error", exc_info=exc)
    return json_response(
        error_body(500, "exception", f"internal error ({type(exc).__name__}); see the log"), 500
    )


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
