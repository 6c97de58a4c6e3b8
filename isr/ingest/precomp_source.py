"""Gallery source over a SCAN "precomp" split (and the synthetic world, written in that layout).

Entry point: :class:`PrecompSource`. Features stay memory-mapped (:class:`PrecompSplit`); a
batch copies only its own rows. Document id: the image's index in the split (with an optional
prefix, e.g. ``test/``, when several splits share an index); ``_source``: ``{"captions": [...]}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from isr.ingest.precomp import PrecompSplit
from isr.ingest.source import Regions, SourceBatch, check_start

__all__ = ["PrecompSource"]


class PrecompSource:
    """Images of one split: region features (N, m, D) and their captions."""

    modality = "image"
    payload = "regions"
    text_fields = ("captions",)

    def __init__(self, data_dir: str | Path, split: str, id_prefix: str = "") -> None:
        self.data = PrecompSplit.open(Path(data_dir), split)
        self.id_prefix = id_prefix

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "precomp",
            "path": str(self.data.data_dir.resolve()),
            "split": self.data.split,
            "id_prefix": self.id_prefix,
        }

    def size(self) -> int:
        return self.data.n_images

    @property
    def feature_dim(self) -> int:
        return self.data.dim

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        check_start(batch_size, start, self.data.n_images)
        for s, feats in self.data.iter_batches(batch_size, start):  # feats (b, m, D)
            pos = tuple(range(s, s + feats.shape[0]))
            yield SourceBatch(
                start=s,
                end=s + len(pos),
                ids=tuple(f"{self.id_prefix}{i}" for i in pos),
                positions=pos,
                payload=Regions(feats),
                sources=tuple({"captions": self.data.captions_of(i)} for i in pos),
            )
