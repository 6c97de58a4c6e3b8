"""Query by image: a photo -> the bundle's own vision backbone -> regions -> the image tower.

Entry point: :class:`ImageQueries` (``load(bundle_dir)``, then ``encode_image_bytes``) and
:class:`LazyImageQueries` (the server's: loads on the first image query). The backbone is the
one the bundle records (``image_backbone.json``), or one given, checked against that record:
an image query through other eyes would compare features the image tower never saw. The same
Encoded query serves image -> text (a caption gallery) and image -> image (a photo gallery):
the pipeline does not care which tower encoded the query.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isr.encoders.bundle import Bundle
from isr.encoders.eyes import check_eyes
from isr.encoders.record import Encoded
from isr.errors import InvalidInput, NotFound
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.images import backbone_for, decode_image

__all__ = ["MAX_IMAGE_BYTES", "ImageQueries", "LazyImageQueries", "image_query"]

MAX_IMAGE_BYTES = 8 * 2**20  # one query photo; the server's body limit caps the base64 too


class ImageQueries:
    """A bundle and the backbone its image tower was trained on."""

    def __init__(self, bundle: Bundle, backbone: ImageBackbone) -> None:
        check_eyes(bundle.eyes, backbone.eyes)
        if backbone.dim != bundle.image_in_dim:
            raise InvalidInput(
                f"the backbone's features have {backbone.dim} dims, the bundle's image tower "
                f"takes {bundle.image_in_dim}"
            )
        self.bundle, self.backbone = bundle, backbone

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        backbone_dir: str | Path | None = None,
        k: int | None = None,
        device: str = "cpu",
    ) -> ImageQueries:
        bundle_dir = Path(bundle_dir)
        path, k = backbone_for(bundle_dir, None if backbone_dir is None else Path(backbone_dir), k)
        bundle = Bundle.load(bundle_dir, device=device)
        return cls(bundle, ImageBackbone.load(path, k, device))

    @property
    def fingerprint(self) -> str:
        return self.bundle.fingerprint

    def encode_texts(self, texts: Sequence[str]) -> Encoded:
        return self.bundle.encode_texts(texts)

    def encode_image_bytes(self, data: bytes) -> Encoded:
        """One image file's bytes (JPEG, PNG, WebP, GIF, BMP) -> its encoded query."""
        if len(data) > MAX_IMAGE_BYTES:
            raise InvalidInput(
                f"query image of {len(data)} bytes exceeds the limit of {MAX_IMAGE_BYTES}"
            )
        im = decode_image(data)
        if isinstance(im, tuple):
            raise InvalidInput(f"query image: {im[0]} ({im[1]})")
        f = self.backbone.features([im])  # (1, k, H)
        return self.bundle.encode_images(f.regions, f.mask)

    def encode_image_file(self, path: str | Path) -> Encoded:
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"query image {path} does not exist")
        return self.encode_image_bytes(path.read_bytes())


def image_query(index: Any, bundle_dir: Path | None, image: Path) -> Encoded:
    """`isr search --image`: encode a photo with the bundle the index was filled with."""
    from isr.errors import Conflict

    if bundle_dir is None:
        raise InvalidInput("an image query needs --bundle DIR (the encoder bundle of the index)")
    q = ImageQueries.load(bundle_dir)
    want = index.config.bundle_fingerprint
    if want and q.fingerprint != want:
        raise Conflict(
            f"bundle {bundle_dir} has fingerprint {q.fingerprint[:12]}..., but the index was "
            f"filled with {want[:12]}...; use the index's own bundle"
        )
    return q.encode_image_file(image)


class LazyImageQueries:
    """Loads :class:`ImageQueries` on the first image query (a server that never gets one
    never loads a vision model)."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.device = device
        self._got: ImageQueries | None = None
        self._lock = threading.Lock()

    def get(self) -> ImageQueries:
        with self._lock:
            if self._got is None:
                import torch

                device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
                self._got = ImageQueries.load(self.bundle_dir, device=device)
            return self._got

    @property
    def fingerprint(self) -> str:
        return self.get().fingerprint

    def encode_image_bytes(self, data: bytes) -> Encoded:
        return self.get().encode_image_bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)
