"""Gallery source over a Karpathy split JSON and its image folder, encoded through a local vision
backbone.

Entry point: :class:`KarpathySource`. The JSON is the ``dataset_flickr30k.json`` /
``dataset_coco.json`` format: ``images[]`` with ``filename`` (and ``filepath`` for COCO),
``split`` ("train", "val", "test", "restval"), ``sentences[].raw`` and ``imgid``. Images are
decoded as an image folder's are (:func:`isr.ingest.images.decode_image`: EXIF orientation
applied, an animation's first frame); an image that is missing, empty, unreadable, truncated
or too large is skipped and reported. Document id: the file name; ``_source``: ``{"filename", "imgid", "captions"}``.
Position: the image's index among the JSON entries of the chosen split, in file order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from isr.encoders.eyes import Eyes
from isr.errors import InvalidInput, NotFound
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.images import backbone_batches, decode_image
from isr.ingest.source import Skip, SourceBatch

__all__ = ["KarpathySource", "read_karpathy"]


def read_karpathy(path: Path, split: str) -> list[Any]:
    """The JSON's image entries of one split ("all": every entry), in file order."""
    if not path.is_file():
        raise NotFound(f"Karpathy split file not found: {path}")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: not valid JSON ({e})") from e
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise InvalidInput(f"{path}: expected an object with an 'images' list")
    if split == "all":
        return images
    picked = [e for e in images if isinstance(e, dict) and e.get("split") == split]
    if not picked:
        have = sorted({str(e.get("split")) for e in images if isinstance(e, dict)})
        raise InvalidInput(f"{path}: no image has split {split!r}; splits present: {have}")
    return picked


class KarpathySource:
    """Images of one split of a Karpathy JSON, as k-means-reduced backbone patch features."""

    modality = "image"
    payload = "regions"
    text_fields = ("captions",)

    def __init__(
        self, json_path: str | Path, image_dir: str | Path, backbone: ImageBackbone, split: str
    ) -> None:
        self.json_path = Path(json_path)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise NotFound(f"image folder not found: {self.image_dir}")
        self.split = split
        self.entries = read_karpathy(self.json_path, split)
        self.backbone = backbone

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "karpathy",
            "path": str(self.json_path.resolve()),
            "images": str(self.image_dir.resolve()),
            "split": self.split,
            "backbone": str(self.backbone.path.resolve()),
            "k": self.backbone.k,
        }

    def size(self) -> int:
        return len(self.entries)

    @property
    def feature_dim(self) -> int:
        return self.backbone.dim

    @property
    def eyes(self) -> Eyes:
        return self.backbone.eyes

    def _entry(self, pos: int) -> tuple[str, Path, dict[str, Any]] | Skip:
        e = self.entries[pos]
        name = e.get("filename") if isinstance(e, dict) else None
        if not isinstance(name, str) or not name:
            return Skip(pos, "", "malformed entry", "no 'filename'")
        sub = e.get("filepath")
        path = (
            self.image_dir / sub / name if isinstance(sub, str) and sub else self.image_dir / name
        )
        sents = e.get("sentences")
        caps = [
            s["raw"]
            for s in (sents if isinstance(sents, list) else [])
            if isinstance(s, Mapping) and isinstance(s.get("raw"), str) and s["raw"].strip()
        ]
        src: dict[str, Any] = {"filename": name, "captions": caps}
        if "imgid" in e:
            src["imgid"] = e["imgid"]
        return name, path, src

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        return backbone_batches(len(self.entries), batch_size, start, self.backbone, self._item)

    def _item(self, p: int) -> tuple[str, Any, Mapping[str, Any] | None] | Skip:
        got = self._entry(p)
        if isinstance(got, Skip):
            return got
        im = decode_image(got[1])  # upright (EXIF), first frame, or why not
        if isinstance(im, tuple):
            return Skip(p, got[0], im[0], im[1])
        return got[0], im, got[2]
