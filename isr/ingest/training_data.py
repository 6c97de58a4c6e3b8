"""Training pairs from a dataset split in the SCAN precomp layout (real or synthetic).

Entry point: :func:`load_paired` -> (PairedData, KeywordVocab). The keyword vocabulary is
built from the *training* captions (`min_images` threshold) and reused for the other splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isr.encoders.train import PairedData
from isr.encoders.vocabulary import KeywordVocab
from isr.ingest.precomp import PrecompSplit, group_captions

__all__ = ["load_paired"]


def load_paired(
    data_dir: Path,
    split: str,
    vocab: KeywordVocab | None = None,
    min_images: int = 100,
    limit: int | None = None,
) -> tuple[PairedData, KeywordVocab]:
    """Images (memory-mapped), captions and keyword targets of one split.

    Without `vocab`, one is built from this split's captions. `limit` keeps the first N images.
    """
    sp = PrecompSplit.open(Path(data_dir), split)
    n = sp.n_images if limit is None else min(limit, sp.n_images)
    c = sp.caps_per_image
    captions = list(sp.captions[: n * c])
    per_image = group_captions(captions, c)
    if vocab is None:
        vocab = KeywordVocab.build(per_image, min_images=min_images)
    labels = vocab.multi_hot(per_image) if vocab.labels else None
    images = sp.images if n == sp.n_images else sp.images[:n]
    data = PairedData(np.asarray(images), captions, labels, None, c)
    return data, vocab
