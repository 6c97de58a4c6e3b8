"""Shared builders of the ingest tests: a tiny random-weight bundle, a tiny synthetic world, and
a source that crashes part-way."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from isr.encoders.bundle import Bundle
from isr.encoders.config import BundleConfig, EncoderConfig
from isr.encoders.model import DualEncoder
from isr.encoders.tokenizer import train_tokenizer
from isr.encoders.vocabulary import KeywordVocab
from isr.ingest.source import GallerySource, SourceBatch

CAPTIONS = [
    "a dog runs on the beach",
    "two cats sleep on a red sofa",
    "a man rides a bike down the street",
    "children play with a ball in the park",
]
LABELS = tuple(f"label{i}" for i in range(12))


def tiny_bundle(image_in_dim: int = 16, seed: int = 0, top_keywords: int = 4) -> Bundle:
    """Random weights (encoding speed and shapes are what the ingest tests need, not quality)."""
    tok = train_tokenizer(CAPTIONS, 80)
    base_cfg = EncoderConfig(
        type="base", vocab_size=len(tok), image_in_dim=image_in_dim, hidden=16, heads=2,
        intermediate=32, layers=1, dim=8, max_frags=8, n_labels=len(LABELS),
    )  # fmt: skip
    fast_cfg = base_cfg.replace(type="fast", dim=6, n_labels=0)
    torch.manual_seed(seed)
    base, fast = DualEncoder(base_cfg), DualEncoder(fast_cfg)
    vocab = KeywordVocab(labels=LABELS, min_images=1, counts=tuple(range(12, 0, -1)))
    cfg = BundleConfig(base=base_cfg, fast=fast_cfg, top_keywords=top_keywords)
    return Bundle(cfg, base, fast, tok, vocab)


def saved_bundle(path: Path, **kw: object) -> Path:
    return tiny_bundle(**kw).save(path)  # type: ignore[arg-type]


class Crashing:
    """Wraps a source so that it dies after `after` batches (the process survives: a
    library-level crash)."""

    def __init__(self, inner: GallerySource, after: int) -> None:
        self.inner, self.after = inner, after
        self.modality, self.payload = inner.modality, inner.payload
        self.feature_dim = inner.feature_dim

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def size(self) -> int | None:
        return self.inner.size()

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        for i, b in enumerate(self.inner.batches(batch_size, start)):
            if i == self.after:
                raise RuntimeError("disk on fire")
            yield b
