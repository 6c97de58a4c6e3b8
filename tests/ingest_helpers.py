"""Shared builders of the ingest tests: a tiny random-weight bundle and a tiny synthetic world."""

from __future__ import annotations

from pathlib import Path

import torch

from isr.encoders.bundle import Bundle
from isr.encoders.config import BundleConfig, EncoderConfig
from isr.encoders.model import DualEncoder
from isr.encoders.tokenizer import train_tokenizer
from isr.encoders.vocabulary import KeywordVocab

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
