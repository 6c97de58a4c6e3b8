"""A local vision backbone (Hugging Face `transformers`) that turns decoded images into patch
features for the image tower.

Entry point: :class:`ImageBackbone` (``load`` from a local directory, then ``features``).
``AutoModel`` / ``AutoImageProcessor`` read the directory with ``local_files_only=True`` and
``use_safetensors=True``: nothing is fetched, and a pickled ``pytorch_model.bin`` is never
loaded. Patch tokens become regions, reduced per image to ``k`` centres by the encoders'
k-means (:func:`isr.encoders.kmeans.kmeans_reduce`); the CLS / pooled token is returned apart.
Which output token is a CLS token is decided by the config's ``model_type``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isr.encoders.eyes import Eyes, eyes_of_dir
from isr.encoders.kmeans import kmeans_reduce
from isr.errors import CorruptIndex, InvalidInput, NotFound

__all__ = ["CLS_FIRST", "ImageBackbone", "PatchFeatures"]

# Backbones whose first output token is a CLS token (not a patch): it is kept out of the
# regions. Others (SigLIP, Swin, convolutional maps) give patches only.
CLS_FIRST = frozenset(
    {
        "vit",
        "deit",
        "beit",
        "data2vec-vision",
        "dinov2",
        "dinov2_with_registers",
        "clip_vision_model",
        "vit_mae",
        "vit_msn",
        "ijepa",
    }
)


@dataclass(frozen=True)
class PatchFeatures:
    """regions (B, k, H) float32 k-means centres of the patch tokens, mask (B, k) bool,
    pooled (B, H) float32: the backbone's pooled output (or its CLS token)."""

    regions: np.ndarray
    mask: np.ndarray
    pooled: np.ndarray


class ImageBackbone:
    """A vision model + its image processor, loaded from one local directory."""

    def __init__(self, path: Path, model: Any, processor: Any, k: int, device: str) -> None:
        self.path = path
        self.model = model
        self.processor = processor
        self.k = k
        self.device = device
        self.model_type = str(model.config.model_type)
        from PIL import Image

        # One blank image tells the token width, whatever the architecture's config calls it.
        self.dim = int(self.features([Image.new("RGB", (32, 32))]).regions.shape[2])
        # what a bundle trained on these features records, and a load compares
        self.eyes: Eyes = eyes_of_dir(path, k, self.dim)

    @classmethod
    def load(cls, path: str | Path, k: int = 32, device: str = "cpu") -> ImageBackbone:
        from transformers import AutoImageProcessor, AutoModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise NotFound(f"vision backbone directory {path} has no config.json")
        if not isinstance(k, int) or k < 1:
            raise InvalidInput(f"k: expected an integer >= 1 (regions per image), got {k!r}")
        try:
            model = AutoModel.from_pretrained(
                str(path), local_files_only=True, use_safetensors=True
            )
            processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise CorruptIndex(f"vision backbone in {path} cannot be loaded: {e}") from e
        # A two-tower checkpoint (CLIP, SigLIP) loads as the pair; keep its vision tower.
        vision = getattr(model, "vision_model", None)
        if vision is not None and hasattr(model, "text_model"):
            model = vision
        return cls(path, model.eval().to(device), processor, k, device)

    def features(self, images: Sequence[Any]) -> PatchFeatures:
        """Decoded RGB images (PIL) -> k-means-reduced patch regions and pooled vectors."""
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = self.model(pixel_values=pixels.to(self.device))
            hs = out.last_hidden_state
            if hs.ndim == 4:  # a convolutional map (B, C, h, w) -> (B, h*w, C)
                hs = hs.flatten(2).transpose(1, 2)
            cls_first = self.model_type in CLS_FIRST
            patches = hs[:, 1:] if cls_first else hs  # (B, P, H)
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                pooled = hs[:, 0] if cls_first else hs.mean(1)
            pooled = pooled.reshape(hs.shape[0], -1)  # (B, H); some backbones keep (B, H, 1, 1)
            mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
            regions, rmask = kmeans_reduce(patches.float(), mask, self.k)  # (B, k, H), (B, k)
        return PatchFeatures(
            regions.cpu().numpy(), rmask.cpu().numpy(), pooled.float().cpu().numpy()
        )
