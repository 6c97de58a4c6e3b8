"""The search page: plain HTML + a little JavaScript served by the facade, no build step.

Entry points: :func:`register_ui(app, facade)` (called by
:func:`isr.plugin.http.server.create_app`), :func:`page` (the HTML) and
:func:`gallery_file` (the checked path of a document's photo).

- ``GET /_isr/ui`` (and ``GET /`` from a browser, i.e. with ``Accept: text/html``) answers
  ``static/ui.html``: a query box (text, or an uploaded image sent as ``ext.isr.query_image``),
  the index picker (``/_cat/indices``: the embedded
  facade's own, or Elasticsearch's in ES mode), filters on the index's `_source` fields (from
  ``/{index}/_mapping``), result cards (thumbnail or caption, id, score, fast and max-sim
  scores, keywords matched) and the per-stage timings and admitted counts of the ``isr``
  profile. The page holds no data, so it is open even when the facade wants an API key; the
  key typed into the page is sent with every request it makes.
- ``GET /_isr/file/{index}/{id}[?w=N]``: the photo of a document of an image-folder gallery
  (``isr load images``; embedded or Elasticsearch, where the facade asks Elasticsearch for the
  document's ``_source.path`` and reads the folder from the ingest record the loader commits
  beside the fragments), or a JPEG thumbnail at most N pixels wide. Only a document id of the
  index is served, only from a folder the index's own ingest record names, and only when the
  resolved file (symlinks followed) is inside that folder: ``..``, absolute paths and links
  pointing elsewhere are refused, whatever the id says.
"""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from isr.errors import InvalidInput, NotFound
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.es.backend import EsBackend

__all__ = ["IMAGE_TYPES", "es_gallery_file", "gallery_file", "page", "register_ui"]

IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
}
MAX_THUMB = 1024


@cache
def page() -> bytes:
    return (Path(__file__).parent / "static" / "ui.html").read_bytes()


def _folders(meta: dict[str, Any]) -> list[Path]:
    """The image folders the index's ingest record names (one per `isr load images` source)."""
    out = []
    for e in meta.get("ingest", {}).get("sources", []):
        src = e.get("source") if isinstance(e, dict) else None
        if (
            isinstance(src, dict)
            and src.get("kind") == "images"
            and isinstance(src.get("path"), str)
        ):
            out.append(Path(src["path"]))
    return out


def gallery_file(index: Any, doc_id: str) -> Path:
    """The file of document `doc_id` of an embedded image-folder index; NotFound otherwise."""
    rows = index.rows_of([doc_id])
    if doc_id not in rows:
        raise NotFound(f"no document [{doc_id}] in this index")
    _, raw = index.docs_at([rows[doc_id]])[rows[doc_id]]
    rel = (json.loads(raw) if raw else {}).get("path")
    return _checked(rel, doc_id, _folders(index.committed_meta()))


def es_gallery_file(backend: EsBackend, doc_id: str) -> Path:
    """The same for an Elasticsearch index: `_source.path` from Elasticsearch, the folders
    from the ingest record the loader commits beside the fragments (sidecar or `_meta`)."""
    # _mget, not GET _doc/{id}: ids of photos hold '/' (relative paths), safe in a body
    docs = backend.client.mget(index=backend.index, ids=[doc_id], source_includes=["path"])
    got = (docs.get("docs") or [{}])[0]
    if not got.get("found"):
        raise NotFound(f"no document [{doc_id}] in this index")
    rel = (got.get("_source") or {}).get("path")
    return _checked(rel, doc_id, _folders(backend.app_meta()))


def _checked(rel: Any, doc_id: str, folders: list[Path]) -> Path:
    """`rel` (a document's `_source.path`) inside one of the index's image `folders`,
    resolved (symlinks followed) and checked to stay there."""
    if not isinstance(rel, str) or not rel:
        raise NotFound(f"document [{doc_id}] has no photo (no _source.path)")
    if Path(rel).is_absolute() or ".." in Path(rel).parts or "\\" in rel:
        raise InvalidInput(f"document [{doc_id}]: _source.path {rel!r} leaves the gallery folder")
    if Path(rel).suffix.lower() not in IMAGE_TYPES:
        raise InvalidInput(f"document [{doc_id}]: {rel!r} is not an image file")
    for folder in folders:
        base = folder.resolve()
        p = (base / rel).resolve()
        if p.is_relative_to(base) and p.is_file():
            return p
    raise NotFound(f"the photo of document [{doc_id}] is not in the index's image folder")


def _thumbnail(path: Path, w: int) -> bytes:
    from PIL import Image, ImageOps  # noqa: PLC0415  (pillow only for a thumbnail)

    with Image.open(path) as im:
        im.seek(0)
        up = ImageOps.exif_transpose(im) or im
        rgb = up.convert("RGB")
    rgb.thumbnail((w, w * 4))
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def register_ui(app: FastAPI, facade: Any) -> None:
    """Add the page and the photo endpoint (before the facade's catch-all route)."""

    @app.get("/_isr/ui")
    async def ui() -> Response:
        return html()

    def photo(index: str, doc_id: str, params: dict[str, str]) -> Response:
        bad = sorted(set(params) - {"w"})
        if bad:
            raise InvalidInput(f"unsupported parameter(s) {bad}; supported: w")
        idx = facade.backend(index)
        if isinstance(idx, EmbeddedIndex):
            path = gallery_file(idx, doc_id)
        elif isinstance(idx, EsBackend):
            path = es_gallery_file(idx, doc_id)
        else:
            raise NotFound("photos are served for embedded and Elasticsearch indexes only")
        headers = {"cache-control": "private, max-age=300", "x-content-type-options": "nosniff"}
        if "w" in params:
            try:
                w = int(params["w"])
            except ValueError:
                raise InvalidInput(f"w must be an integer, got {params['w']!r}") from None
            if not 16 <= w <= MAX_THUMB:
                raise InvalidInput(f"w must be in [16, {MAX_THUMB}], got {w}")
            try:
                data = _thumbnail(path, w)
            except OSError as e:
                raise InvalidInput(f"the photo of [{doc_id}] cannot be decoded ({e})") from e
            return Response(data, media_type="image/jpeg", headers=headers)
        return Response(path.read_bytes(), media_type=IMAGE_TYPES[path.suffix.lower()],
                        headers=headers)  # fmt: skip

    @app.get("/_isr/file/{index}/{doc_id:path}")
    async def file_route(index: str, doc_id: str, request: Request) -> Response:
        return await run_in_threadpool(photo, index, doc_id, dict(request.query_params))


def html() -> Response:
    return Response(page(), media_type="text/html; charset=utf-8",
                    headers={"x-content-type-options": "nosniff",
                             "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; "
                             "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})  # fmt: skip


def wants_html(accept: str) -> bool:
    """A browser's navigation (text/html first or alone), not a client asking for JSON."""
    return "text/html" in accept and "application/json" not in accept.split(",")[0]
