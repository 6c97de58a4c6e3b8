"""The embedded index's writer: the loader's :class:`~isr.plugin.writer.IndexWriter` over an
:class:`~isr.plugin.embedded.index.EmbeddedIndex` directory.

The ingest progress (:data:`~isr.plugin.writer.INGEST_KEY`) is stored in the document table's
meta rows, inside the same sqlite transaction as the batch it covers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from isr.encoders.record import Encoded
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.writer import INGEST_KEY

__all__ = ["EmbeddedWriter"]


class EmbeddedWriter:
    """Writes into an embedded index directory."""

    def __init__(self, index: EmbeddedIndex) -> None:
        self.index = index

    @property
    def config(self) -> IndexConfig:
        return self.index.config

    @property
    def target(self) -> str:
        return str(self.index.path)

    def add(
        self, ids: Sequence[str], items: Encoded, sources: Sequence[Mapping[str, Any] | None]
    ) -> None:
        self.index.add(ids, items, sources)

    def upsert(
        self, ids: Sequence[str], items: Encoded, sources: Sequence[Mapping[str, Any] | None]
    ) -> int:
        replaced = len(self.index.rows_of(ids))
        self.index.upsert(ids, items, sources)
        return replaced

    def commit(self, progress: Mapping[str, Any]) -> None:
        # durable now; the HNSW insertion overlaps the loader's next batches
        self.index.commit(meta={INGEST_KEY: dict(progress)}, wait_for_graph=False)

    def progress(self) -> dict[str, Any]:
        got = self.index.committed_meta().get(INGEST_KEY, {})
        return got if isinstance(got, dict) else {}

    def stats(self) -> dict[str, Any]:
        return self.index.stats()

    def close(self) -> None:
        self.index.close()
