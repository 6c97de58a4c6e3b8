"""Where the loader writes: a small writer interface over an index, and the embedded one.

Entry points: :class:`IndexWriter` (the protocol the loader writes through), :class:`EmbeddedWriter`
(an :class:`~isr.plugin.embedded.index.EmbeddedIndex` directory), :func:`open_writer` /
:func:`create_writer` (pick the writer for a ``--index`` target). An ``http(s)://host:port/INDEX``
target gets an :class:`~isr.plugin.es.writer.EsWriter` (Elasticsearch index INDEX, fragments in a
sidecar directory or in the index itself), configured by :class:`EsOptions`.

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
from isr.plugin.config import MANIFEST, IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.es.mapping import FRAGMENT_HOMES

__all__ = [
    "INGEST_KEY",
    "EmbeddedWriter",
    "EsOptions",
    "IndexWriter",
    "check_target",
    "create_writer",
    "is_url",
    "open_writer",
]

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


def is_url(target: str | Path) -> bool:
    return str(target).startswith(("http://", "https://"))


def check_target(target: str | Path, es: EsOptions | None = None) -> None:
    """Refuse a target no writer can open: an Elasticsearch URL without an index name, a
    layout without the directory it needs, or Elasticsearch options for a directory."""
    es = es or EsOptions()
    if not is_url(target):
        if es.sidecar is not None or es.fragments != "sidecar":
            raise InvalidInput(
                f"--index {target}: --sidecar and --es-fragments are for an Elasticsearch "
                "target (--index http(s)://host:port/INDEX), not an index directory"
            )
        return
    from isr.plugin.es.writer import parse_es_target

    parse_es_target(str(target))
    if es.fragments == "sidecar" and es.sidecar is None:
        raise InvalidInput(
            f"--index {target}: fragments in a sidecar (--es-fragments sidecar, the default) "
            "need the sidecar directory: pass --sidecar DIR, or --es-fragments rank_vectors to "
            "keep them in the Elasticsearch index"
        )
    if es.fragments == "rank_vectors" and es.sidecar is not None:
        raise InvalidInput(
            f"--index {target}: --es-fragments rank_vectors keeps fragments in Elasticsearch; "
            f"drop --sidecar {es.sidecar}"
        )


def open_writer(target: str | Path, es: EsOptions | None = None) -> IndexWriter | None:
    """The writer of an existing index, or None when there is no index at `target` yet."""
    check_target(target, es)
    if is_url(target):
        from isr.plugin.es.writer import EsWriter

        return EsWriter.open(str(target), es or EsOptions())
    path = Path(target)
    if not (path / MANIFEST).exists():
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InvalidInput(f"--index {path}: exists but is not an isr index")
        return None
    return EmbeddedWriter(EmbeddedIndex.open(path))


def create_writer(
    target: str | Path, config: IndexConfig, es: EsOptions | None = None
) -> IndexWriter:
    """Create an empty index at `target` (an empty directory there is replaced)."""
    check_target(target, es)
    if is_url(target):
        from isr.plugin.es.writer import EsWriter

        return EsWriter.create(str(target), config, es or EsOptions())
    path = Path(target)
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # EmbeddedIndex.create refuses any existing path
    return EmbeddedWriter(EmbeddedIndex.create(path, config))
