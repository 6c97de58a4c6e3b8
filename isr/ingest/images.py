"""Gallery source over a folder of photos, encoded through a local vision backbone.

Entry point: :class:`ImageFolderSource` (``isr load images DIR``). The folder is walked
recursively once, when the source is built; files whose suffix is one of :data:`SUFFIXES`
are the gallery, in the order of their relative paths (so positions, and ``--resume``, are
stable while the folder does not change). Each file is decoded with Pillow: EXIF
orientation applied (``ImageOps.exif_transpose``), the first frame of an animation, RGB. A
file that is empty, unreadable, truncated or smaller than ``min_side`` pixels on a side is
skipped with the reason in the ingest report.

Document id: the relative path (POSIX separators). ``_source``: ``path`` (relative),
``file_name``, ``bytes``, ``mtime`` (epoch seconds, an integer), ``width``, ``height``
(after the EXIF rotation): every one of them a filter field. The thumbnails of the search
page are served from ``path`` under the folder, which the index records as its ``root``
(``describe()["path"]``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from isr.encoders.eyes import Eyes, read_eyes
from isr.errors import InvalidInput, NotFound
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.source import Regions, Skip, SourceBatch, check_start

__all__ = ["SUFFIXES", "ImageFolderSource", "backbone_for", "decode_image", "list_images"]

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb limit (2x its warning level)


def backbone_for(bundle_dir: Path, backbone: Path | None, k: int | None) -> tuple[Path, int]:
    """The vision backbone directory and k to extract with: the ones given, else those the
    bundle records (its ``image_backbone.json``)."""
    eyes = read_eyes(bundle_dir)
    hf = eyes if eyes is not None and eyes.kind == "hf" else None
    if backbone is None:
        if hf is None:
            what = "records no image backbone" if eyes is None else "was trained on " + (
                eyes.describe())  # fmt: skip
            raise InvalidInput(
                f"bundle {bundle_dir} {what}: name the vision model with --backbone DIR"
            )
        backbone = Path(hf.path)
        if not backbone.is_dir():
            raise NotFound(
                f"bundle {bundle_dir} was trained on the vision model at {backbone}, which is "
                "not there any more: give its new place with --backbone DIR"
            )
    if k is None:
        k = int(hf.reduction.get("k", 32)) if hf is not None else 32
    return Path(backbone), k


def list_images(root: Path) -> list[str]:
    """Relative POSIX paths of the image files under root, sorted; hidden folders skipped."""
    out: list[str] = []
    for d, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        rel = Path(d).relative_to(root)
        for f in files:
            if f.lower().endswith(SUFFIXES) and not f.startswith("."):
                out.append((rel / f).as_posix())
    return sorted(out)


def decode_image(path: Path | bytes, min_side: int = 1) -> Any:
    """An upright RGB PIL image of the file's (or the bytes') first frame, or a
    (reason, detail) pair."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: PLC0415  (pillow: images only)

    name = path.name if isinstance(path, Path) else "the image"
    try:
        if (path.stat().st_size if isinstance(path, Path) else len(path)) == 0:
            return ("empty file", name)
        with Image.open(path if isinstance(path, Path) else io.BytesIO(path)) as im:
            if im.width * im.height > MAX_PIXELS:
                return ("image too large", f"{name}: {im.width}x{im.height} pixels")
            im.seek(0)  # an animation's first frame
            im.load()  # decode now: a truncated file fails here, not inside the processor
            up = ImageOps.exif_transpose(im)
            rgb = (up if up is not None else im).convert("RGB")
    except FileNotFoundError:
        return ("missing image", name)
    except Image.DecompressionBombError as e:  # before OSError: not one, but say it apart
        return ("image too large", f"{name}: {e}")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        return ("unreadable image", f"{name}: {e}")
    if min(rgb.size) < min_side:
        return ("image too small", f"{name}: {rgb.width}x{rgb.height} < {min_side} px")
    return rgb


class ImageFolderSource:
    """The photos under one folder, as k-means-reduced backbone patch features."""

    modality = "image"
    payload = "regions"

    def __init__(self, root: str | Path, backbone: ImageBackbone, min_side: int = 16) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotFound(f"image folder not found: {self.root}")
        if not isinstance(min_side, int) or min_side < 1:
            raise InvalidInput(f"--min-side: expected an integer >= 1, got {min_side!r}")
        self.min_side = min_side
        self.files = list_images(self.root)
        if not self.files:
            raise InvalidInput(
                f"no image files under {self.root} (looked for {', '.join(SUFFIXES)})"
            )
        self.backbone = backbone

    @property
    def feature_dim(self) -> int:
        return self.backbone.dim

    @property
    def eyes(self) -> Eyes:
        return self.backbone.eyes

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "images",
            "path": str(self.root.resolve()),
            "files": len(self.files),
            "backbone": self.backbone.eyes.fingerprint,
            "k": self.backbone.k,
            "min_side": self.min_side,
        }

    def size(self) -> int:
        return len(self.files)

    def _source(self, rel: str, im: Any) -> dict[str, Any]:
        st = (self.root / rel).stat()
        return {
            "path": rel,
            "file_name": rel.rsplit("/", 1)[-1],
            "bytes": int(st.st_size),
            "mtime": int(st.st_mtime),
            "width": int(im.width),
            "height": int(im.height),
        }

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        return backbone_batches(len(self.files), batch_size, start, self.backbone, self._item)

    def _item(self, p: int) -> tuple[str, Any, Mapping[str, Any] | None] | Skip:
        rel = self.files[p]
        got = decode_image(self.root / rel, self.min_side)
        if isinstance(got, tuple):
            return Skip(p, rel, got[0], got[1])
        return rel, got, self._source(rel, got)


def backbone_batches(
    n: int,
    batch_size: int,
    start: int,
    backbone: ImageBackbone,
    item: Callable[[int], tuple[str, Any, Mapping[str, Any] | None] | Skip],
) -> Iterator[SourceBatch]:
    """The batches of a source of decoded images, from position start: item(p) gives position
    p's (id, upright image, _source) or why it is skipped; the kept images of a batch go
    through the vision backbone together. Shared by the image folder and Karpathy sources."""
    check_start(batch_size, start, n)
    for s in range(start, n, batch_size):
        e = min(s + batch_size, n)
        ids: list[str] = []
        pos: list[int] = []
        images: list[Any] = []
        srcs: list[Mapping[str, Any] | None] = []
        skipped: list[Skip] = []
        for p in range(s, e):
            got = item(p)
            if isinstance(got, Skip):
                skipped.append(got)
                continue
            ids.append(got[0])
            pos.append(p)
            images.append(got[1])
            srcs.append(got[2])
        if images:
            f = backbone.features(images)
            payload = Regions(f.regions, f.mask)  # (b, k, H), (b, k)
        else:
            payload = Regions(np.zeros((0, backbone.k, backbone.dim), np.float32))
        yield SourceBatch(s, e, tuple(ids), tuple(pos), payload, tuple(srcs), tuple(skipped))
