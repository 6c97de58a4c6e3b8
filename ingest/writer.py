"""Where the loader writes: a small writer interface over an index, and the embedded one.

Entry points: :class:`IndexWriter` (the protocol the loader writes through), :class:`EmbeddedWriter`
(an :class:`~isr.plugin.index.EmbeddedIndex` directory), :func:`open_writer` /
:func:`create_writer` (pick the writer for a ``--index`` target). An Elasticsearch writer
plugs in here once that backend exists; until then an ``http(s)://`` target is refused.

The ingest progress (:data:`INGEST_KEY`) is committed with the documents: the embedded index
stores it in its document table's meta rows, inside the same sqlite transaction as the batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from isr.encoders.record import Encoded
from isr.errors import InvalidInput
from isr.plugin.index import EmbeddedIndex
from isr.plugin.manifest import MANIFEST, IndexConfig

__all__ = [
    "INGEST_KEY",
    "EmbeddedWriter",
    "IndexWriter",
    "check_target",
    "create_writer",
    "is_url",
    "open_writer",
]

INGEST_KEY = "ingest"


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
        """Make every write durable, together with the ingest progress."""
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
        self.index.commit(meta={INGEST_KEY: dict(progress)})

    def progress(self) -> dict[str, Any]:
        got = self.index.committed_meta().get(INGEST_KEY, {})
        return got if isinstance(got, dict) else {}

    def stats(self) -> dict[str, Any]:
        return self.index.stats()

    def close(self) -> None:
        self.index.close()


def is_url(target: str | Path) -> bool:
    return str(target).startswith(("http://", "https://"))


def check_target(target: str | Path) -> None:
    """Refuse a target no writer exists for yet (an Elasticsearch URL)."""
    if is_url(target):
        raise InvalidInput(
            f"--index {target}: loading into Elasticsearch is not available yet (the "
            "Elasticsearch writer is still being built); load into an embedded index "
            "directory for now"
        )


def open_writer(target: str | Path) -> IndexWriter | None:
    """The writer of an existing index, or None when there is no index at `target` yet."""
    check_target(target)
    path = Path(target)
    if not (path / MANIFEST).exists():
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InvalidInput(f"--index {path}: exists but is not an isr index")
        return None
    return EmbeddedWriter(EmbeddedIndex.open(path))


def create_writer(target: str | Path, config: IndexConfig) -> IndexWriter:
    """Create an empty index at `target` (an empty directory there is replaced)."""
    check_target(target)
    path = Path(target)
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # EmbeddedIndex.create refuses any existing path
    return EmbeddedWriter(EmbeddedIndex.create(path, config))
