"""What a gallery source yields to the loader: batches of ids, a payload and `_source` objects.

Entry points: :class:`GallerySource` (the protocol every source implements) and
:class:`SourceBatch`. A payload is one of

- :class:`Regions`: region / patch features (b, m, D) for a bundle's image tower;
- :class:`Texts`: captions for a bundle's text tower (a text gallery, image -> text search);
- :class:`EncodedRows`: items encoded elsewhere (fast vector, fragments, keywords), indexed as is.

Positions: a source numbers its items 0, 1, 2, ... in a fixed order (image index, line number,
record number); a batch covers positions [start, end), skipped items included, and
``batches(batch_size, start)`` resumes exactly at ``start``. The loader commits ``end`` with
the documents, which is what makes ``--resume`` exact.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from isr.encoders.record import Encoded, Keywords
from isr.errors import InvalidInput

__all__ = [
    "EncodedRows",
    "GallerySource",
    "Payload",
    "Regions",
    "Skip",
    "SourceBatch",
    "Texts",
    "check_start",
]


@dataclass(frozen=True)
class Regions:
    """feats (b, m, D) float32; mask (b, m) bool, True where a region is real (None: all)."""

    feats: np.ndarray
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.feats.shape[0])

    def take(self, keep: np.ndarray) -> Regions:
        return Regions(self.feats[keep], None if self.mask is None else self.mask[keep])


@dataclass(frozen=True)
class Texts:
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, keep: np.ndarray) -> Texts:
        return Texts(tuple(self.texts[i] for i in np.flatnonzero(keep)))


@dataclass(frozen=True)
class EncodedRows:
    """Items encoded elsewhere, one array per item (shapes are checked by the loader against
    the index): fast (d_fast,), fragments (n_i, d_frag), keywords ranked best first."""

    fast: tuple[np.ndarray, ...]
    fragments: tuple[np.ndarray, ...]
    keywords: tuple[Keywords, ...]

    def __len__(self) -> int:
        return len(self.fast)

    def take(self, keep: np.ndarray) -> EncodedRows:
        idx = np.flatnonzero(keep).tolist()
        return EncodedRows(
            tuple(self.fast[i] for i in idx),
            tuple(self.fragments[i] for i in idx),
            tuple(self.keywords[i] for i in idx),
        )


Payload = Regions | Texts | EncodedRows | Encoded


@dataclass(frozen=True)
class Skip:
    """An item left out of the index: a short reason the report counts by ("empty caption",
    "NaN or inf", ...) and the particulars."""

    position: int
    id: str  # "" when the item's id could not be read
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        who = f"position {self.position}" + (f" (id {self.id!r})" if self.id else "")
        return f"{who}: {self.reason}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class SourceBatch:
    """Items at source positions [start, end): the readable ones, aligned with `ids`, and the
    ones the source itself could not read (`skipped`)."""

    start: int
    end: int
    ids: tuple[str, ...]
    positions: tuple[int, ...]
    payload: Payload
    sources: tuple[Mapping[str, Any] | None, ...]
    skipped: tuple[Skip, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.ids)
        assert len(self.positions) == n and len(self.sources) == n, "misaligned batch"
        assert len(self.payload) == n, (len(self.payload), n)
        assert self.start <= self.end


class GallerySource(Protocol):
    """A gallery the loader can stream, resume and name.

    modality: "image" or "text", what the documents are (the index's modality).
    payload: what its batches carry: "regions", "texts" or "encoded" (EncodedRows / Encoded).
    feature_dim: D of its region features ("regions" sources), checked against the bundle
    before anything is read; None otherwise. A source may also name `text_fields`: `_source`
    fields of free text that an index it creates stores but does not index for filters.
    """

    @property
    def modality(self) -> str: ...

    @property
    def payload(self) -> str: ...

    @property
    def feature_dim(self) -> int | None: ...

    def describe(self) -> dict[str, Any]:
        """What this source is (kind, absolute paths, split): recorded with the ingest
        progress, and compared on --resume."""
        ...

    def size(self) -> int | None:
        """Positions in the source (for the progress bar's ETA); None when unknown."""
        ...

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        """Batches of at most batch_size positions, from position start to the end."""
        ...


def check_start(batch_size: int, start: int, n: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    if not isinstance(start, int) or not 0 <= start <= n:
        raise InvalidInput(f"start: expected a position in [0, {n}], got {start!r}")
