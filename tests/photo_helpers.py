"""Shared builders of the photo tests: a tiny random ViT saved like a Hugging Face checkpoint,
a folder of generated photos (good, rotated, animated, broken), and a searchable photo gallery
(a tiny bundle that records the ViT as its eyes, the folder loaded into an embedded index)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from ingest_helpers import tiny_bundle

from isr.encoders.bundle import Bundle
from isr.encoders.eyes import eyes_of_dir
from isr.ingest.fields import WithFields, read_fields
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.images import ImageFolderSource
from isr.ingest.loader import IngestOptions, load_gallery


def save_vit(d: Path, seed: int = 0) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    cfg = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8,
    )  # fmt: skip
    torch.manual_seed(seed)
    ViTModel(cfg).save_pretrained(d)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d


def photo_folder(root: Path) -> Path:
    """Nine files: six good images (one rotated by EXIF, one animated GIF, nested folders),
    one too small, one empty, one not an image; plus files the walk must not pick up."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def px(h: int, w: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))

    (root / "trips" / "2019").mkdir(parents=True)
    (root / ".thumbs").mkdir()
    px(30, 40).save(root / "a.jpg")
    rotated = px(20, 40)  # stored landscape, EXIF says "rotate 90": upright it is 40 x 20
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(root / "trips" / "rotated.jpg", exif=exif)
    px(24, 24).save(root / "trips" / "b.png")
    px(32, 32).save(root / "trips" / "2019" / "c.webp")
    px(30, 30).save(root / "trips" / "2019" / "d.bmp")
    frames = [px(28, 36), px(28, 36)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    px(4, 4).save(root / "tiny.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "fake.jpg").write_text("not an image")
    (root / "notes.txt").write_text("not a photo")
    px(30, 30).save(root / ".thumbs" / "hidden.jpg")
    return root


def photo_bundle(root: Path) -> tuple[Path, Path, Bundle]:
    """root/vit (a tiny vision model), root/photos (the folder), root/bundle (with those
    eyes, saved). Returns (vit, photo folder, bundle)."""
    vit = save_vit(root / "vit")
    photos = photo_folder(root / "photos")
    b = tiny_bundle(32)
    b.eyes = eyes_of_dir(vit, k=6, feature_dim=32)
    b.save(root / "bundle")
    return vit, photos, b


def photo_gallery(root: Path) -> tuple[Path, Path, Path]:
    """:func:`photo_bundle`, and root/indices/photos (the index, with a license field joined
    on). Returns (index root, bundle, photo folder)."""
    vit, photos, b = photo_bundle(root)
    meta = root / "meta.jsonl"
    meta.write_text("".join(
        json.dumps({"path": p, "license": lic}) + "\n"
        for p, lic in [("a.jpg", "cc-by"), ("trips/b.png", "cc0"), ("anim.gif", "cc-by")]
    ))  # fmt: skip
    src = WithFields(ImageFolderSource(photos, ImageBackbone.load(vit, k=6)), read_fields(meta))
    load_gallery(src, str(root / "indices" / "photos"), b,
                 IngestOptions(batch_size=4, progress=False))  # fmt: skip
    return root / "indices", root / "bundle", photos
