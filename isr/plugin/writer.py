"""Where the loader writes: the small writer interface every backend's writer implements.

Entry points: :class:`IndexWriter` (the protocol the loader writes through), :class:`EsOptions`
(how an Elasticsearch target is reached and laid out), :func:`is_url`. The writers themselves
live with their backends (:class:`~isr.plugin.embedded.writer.EmbeddedWriter`,
:class:`~isr.plugin.es.writer.EsWriter`); :mod:`isr.plugin.targets` picks one for a ``--index``
target (an index directory, or ``http(s)://host:port/INDEX``).

The ingest progress (:data:`INGEST_KEY`) is committed with the documents: the embedded index
stores it in its document table's meta rows, inside the same sqlite transaction as the batch;
the Elasticsearch writer commits it right after the documents it covers are durable (see
:mod:`isr.plugin.es.writer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from isr.encoders.record import Encoded
from isr.errors import InvalidInput
from isr.plugin.config import FRAGMENT_HOMES, IndexConfig

__all__ = ["INGEST_KEY", "EsOptions", "IndexWriter", "is_url"]

INGEST_KEY = "ingest"


@dataclass(frozen=True)
class EsOptions:
    """How to reach and lay out an Elasticsearch target (unused for a directory target).

    sidecar: the sidecar directory (fragments by `_id`), needed when fragments live in a
    sidecar; fragments: "sidecar" or "rank_vectors" (in the Elasticsearch index itself) -- the
    layout of an index the loader creates, checked against an existing index's; api_key: an
    Elasticsearch API key (the command line reads ``ISR_ES_API_KEY``).
    """

    sidecar: Path | None = None
    fragments: str = "sidecar"
    api_key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.fragments not in FRAGMENT_HOMES:
            raise InvalidInput(
                f"--es-fragments {self.fragments!r} is not one of {', '.join(FRAGMENT_HOMES)}"
            )
        if self.sidecar is not None:
            object.__setattr__(self, "sidecar", Path(self.sidecar))


class IndexWriter(Protocol):
    """What the loader needs of an index: writes, commits with progress, stats."""

    @property
    def config(self) -> IndexConfig: ...

    @property
    def target(self) -> str: ...

    def add(
        self, ids: Sequence[str], items: Encoded, sources: Sequence[Mapping[str, Any] | None]
    ) -> None:
        """Add new documents (an id already present is an error)."""
        ...

    def upsert(
        self, ids: Sequence[str], items: Encoded, sources: Sequence[Mapping[str, Any] | None]
    ) -> int:
        """Add or replace documents; returns how many replaced a live document."""
        ...

    def commit(self, progress: Mapping[str, Any]) -> None:
        """Make every write durable, then the ingest progress (never ahead of the writes)."""
        ...

    def progress(self) -> dict[str, Any]:
        """The ingest progress of the last commit ({} if none)."""
        ...

    def stats(self) -> dict[str, Any]:
        """At least "documents" (live) and "bytes_total"."""
        ...

    def close(self) -> None:
        """Release the index; uncommitted writes are dropped."""
        ...


def is_url(target: str | Path) -> bool:
    return str(target).startswith(("http://", "https://"))
