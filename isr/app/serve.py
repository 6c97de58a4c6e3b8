"""The HTTP facade as the app starts it: the engine's :func:`isr.plugin.http.server.create_app`
with the app's loader of encoder bundles (the engine takes any
:class:`~isr.plugin.backend.TextEncoder`; only the app loads a bundle). Several bundles per
server: each index records its bundle, and :class:`AppBundles` loads the ones queried.

Entry points: :func:`create_app` (same arguments as the engine's), :class:`AppBundles`,
:func:`bundle_loader`, :func:`encode_query_text` (the `isr search --text` query).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from isr.device import pick_device
from isr.encoders.bundle import Bundle
from isr.encoders.record import Encoded
from isr.errors import InvalidInput
from isr.plugin import IndexConfig, TextEncoder, check_encoder
from isr.plugin.http import server

__all__ = ["AppBundles", "bundle_loader", "create_app", "encode_query_text", "serve"]


def bundle_loader(bundle_dir: Path, device: str | None = None) -> Callable[[], TextEncoder]:
    """A function that loads the bundle at `bundle_dir` (on `device`, else CUDA when present)."""

    def load() -> TextEncoder:
        return Bundle.load(bundle_dir, device=pick_device(device, "encoder"))

    return load


class AppBundles:
    """The facade's :class:`~isr.plugin.http.server.BundleLoader`: loads a bundle directory
    (once per resolved directory, on `device`) and builds a bundle's image queries through the
    backbone it records (the vision model is loaded on the first image query only)."""

    def __init__(self, device: str | None = None) -> None:
        self.device = device
        self._got: dict[Path, TextEncoder] = {}
        self._lock = threading.Lock()

    def text_encoder(self, path: Path) -> TextEncoder:
        key = Path(path).resolve()
        with self._lock:
            if key not in self._got:
                self._got[key] = bundle_loader(key, self.device)()
            return self._got[key]

    def image_encoder(self, path: Path, text: TextEncoder) -> server.ImageEncoder:
        from isr.app.image_query import ImageQueries  # the vision stack: image queries only
        from isr.ingest.image_backbone import ImageBackbone
        from isr.ingest.images import backbone_for

        assert isinstance(text, Bundle)
        backbone, k = backbone_for(Path(path), None, None)
        device = str(pick_device(self.device, "image encoder"))
        return ImageQueries(text, ImageBackbone.load(backbone, k, device))


def create_app(
    config: server.ServerConfig,
    encoder: TextEncoder | None = None,
    es_client: Any = None,
    image_encoder: server.ImageEncoder | None = None,
    bundles: server.BundleLoader | None = None,
) -> FastAPI:
    """The facade, with the app's bundle loader unless an `encoder` is given: each index's
    bundle (the one it records, or `config.bundle`) is loaded on its first text or image
    query (the facade starts at once)."""
    if encoder is None and bundles is None:
        bundles = AppBundles(config.device)
    return server.create_app(config, encoder, es_client, image_encoder, bundles=bundles)


def serve(config: server.ServerConfig, image_encoder: server.ImageEncoder | None = None) -> None:
    """Run the facade with uvicorn until interrupted (`isr serve`). --bundle, when given, is
    loaded (and so checked) before the server listens: a broken bundle fails the start, not
    the first query. The bundles the indexes record are loaded on their first query."""
    bundles = AppBundles(config.device)
    if config.bundle is not None:
        bundles.text_encoder(Path(config.bundle))
    app = create_app(config, image_encoder=image_encoder, bundles=bundles)
    server.serve(app, config)


def encode_query_text(config: IndexConfig, bundle_dir: Path | None, text: str) -> Encoded:
    """Encode a text query with the bundle the index was filled with (checked by fingerprint)."""
    if bundle_dir is None:
        raise InvalidInput("a text query needs --bundle DIR (the encoder bundle of the index)")
    bundle = Bundle.load(Path(bundle_dir), device="cpu")
    check_encoder(bundle, config, str(bundle_dir))
    return bundle.encode_texts([text])
