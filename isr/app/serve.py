"""The HTTP facade as the app starts it: the engine's :func:`isr.plugin.http.server.create_app`
with the app's loader of the encoder bundle (the engine takes any
:class:`~isr.plugin.backend.TextEncoder`; only the app loads a bundle).

Entry points: :func:`create_app` (same arguments as the engine's), :func:`bundle_loader`,
:func:`encode_query_text` (the `isr search --text` query).
"""

from __future__ import annotations

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

__all__ = ["bundle_loader", "create_app", "encode_query_text", "serve"]


def bundle_loader(bundle_dir: Path, device: str | None = None) -> Callable[[], TextEncoder]:
    """A function that loads the bundle at `bundle_dir` (on `device`, else CUDA when present)."""

    def load() -> TextEncoder:
        return Bundle.load(bundle_dir, device=pick_device(device, "encoder"))

    return load


def create_app(
    config: server.ServerConfig,
    encoder: TextEncoder | None = None,
    es_client: Any = None,
    image_encoder: server.ImageEncoder | None = None,
) -> FastAPI:
    """The facade; `config.bundle`, when set and no `encoder` is given, is loaded on the first
    text query (the facade starts at once)."""
    load = None
    if encoder is None and config.bundle is not None:
        load = bundle_loader(Path(config.bundle), config.device)
    return server.create_app(config, encoder, es_client, image_encoder, load_encoder=load)


def serve(config: server.ServerConfig, image_encoder: server.ImageEncoder | None = None) -> None:
    """Run the facade with uvicorn until interrupted (`isr serve`). The bundle is loaded (and
    so checked) before the server listens: a broken bundle fails the start, not the first
    query, and `/_isr/ready` never reports a server that cannot encode."""
    encoder = None if config.bundle is None else bundle_loader(Path(config.bundle), config.device)()
    server.serve(create_app(config, encoder=encoder, image_encoder=image_encoder), config)


def encode_query_text(config: IndexConfig, bundle_dir: Path | None, text: str) -> Encoded:
    """Encode a text query with the bundle the index was filled with (checked by fingerprint)."""
    if bundle_dir is None:
        raise InvalidInput("a text query needs --bundle DIR (the encoder bundle of the index)")
    bundle = Bundle.load(Path(bundle_dir), device="cpu")
    check_encoder(bundle, config, str(bundle_dir))
    return bundle.encode_texts([text])
