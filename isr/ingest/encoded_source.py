"""A gallery source over items already encoded in memory (no bundle, nothing on disk).

Entry points: :class:`EncodedSource` (any batches of ids + :class:`Encoded` items),
:func:`array_source` (one Encoded array with its ids) and
:func:`isr.ingest.encoded_world.world_source` (the seeded synthetic encoded gallery), and
:func:`fill_index`, which loads one into an index the caller holds open. Evaluation, the
benchmarks, the synthetic galleries and the tests fill their indexes this way, through the one
fill path, :func:`isr.ingest.loader.load_gallery`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from isr.encoders.record import Encoded
from isr.ingest.loader import IngestOptions, IngestReport, load_gallery
from isr.ingest.source import SourceBatch, check_start
from isr.plugin import EmbeddedIndex, EsBackend, writer_for

__all__ = ["EncodedSource", "SourceOf", "array_source", "fill_index"]

# the `_source` of the document at a position (None: no user fields)
SourceOf = Callable[[int], Mapping[str, Any] | None]


class EncodedSource:
    """Pre-encoded items: `batches(batch_size)` yields (ids, items) from position 0 in a fixed
    order (a resumed run skips to its start); `source_of(position)` gives each `_source`."""

    payload, feature_dim = "encoded", None

    def __init__(
        self,
        batches: Callable[[int], Iterable[tuple[Sequence[str], Encoded]]],
        n: int,
        describe: Mapping[str, Any],
        modality: str = "image",
        source_of: SourceOf | None = None,
    ) -> None:
        self._batches, self.n, self._describe = batches, n, dict(describe)
        self.modality, self.source_of = modality, source_of

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)

    def size(self) -> int:
        return self.n

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        check_start(batch_size, start, self.n)
        pos = 0
        for ids, items in self._batches(batch_size):
            lo, pos = max(0, start - pos), pos + len(ids)
            if lo >= len(ids):
                continue
            a = pos - len(ids) + lo
            srcs = tuple(self.source_of(p) if self.source_of else None for p in range(a, pos))
            yield SourceBatch(a, pos, tuple(ids[lo:]), tuple(range(a, pos)), items[lo:], srcs)


def array_source(
    ids: Sequence[str],
    items: Encoded,
    describe: Mapping[str, Any],
    modality: str = "image",
    source_of: SourceOf | None = None,
) -> EncodedSource:
    """The items of one Encoded array, document i with id ids[i]."""
    ids = list(ids)

    def batches(size: int) -> Iterator[tuple[Sequence[str], Encoded]]:
        for s in range(0, len(ids), size):
            yield ids[s : s + size], items[s : s + size]

    return EncodedSource(batches, len(ids), describe, modality, source_of)


def fill_index(
    index: EmbeddedIndex | EsBackend,
    source: EncodedSource,
    batch: int,
    commit_every: int | None = None,
    progress: bool = False,
) -> IngestReport:
    """Load pre-encoded `source` into an index the caller holds open (the one fill path,
    :func:`~isr.ingest.loader.load_gallery`); commits every `commit_every` documents
    (default: every batch). An Elasticsearch index is refreshed at each commit."""
    opt = IngestOptions(
        batch_size=batch,
        commit_every=commit_every or batch,
        progress=progress,
        fingerprint=index.config.bundle_fingerprint,  # pre-encoded for this index
    )
    w = writer_for(index)
    try:
        return load_gallery(source, w, None, opt)
    finally:
        # the Elasticsearch writer restores the index settings a bulk load replaced (the
        # loader leaves a writer it did not open open, so it does not close this one)
        finish = getattr(w, "finish", None)
        if finish is not None:
            finish()
