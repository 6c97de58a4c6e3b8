"""Open a ``--index`` target: an index directory (the embedded index) or an Elasticsearch
index ``http(s)://host:port/INDEX``.

Entry points: :func:`check_target`, :func:`open_writer` / :func:`create_writer` (the loader's
writer), :func:`open_backend` (a :class:`~isr.plugin.backend.SearchBackend` to search). This is
the one module of the engine that knows both backends.
"""

from __future__ import annotations

from pathlib import Path

from elasticsearch import Elasticsearch

from isr.errors import InvalidInput
from isr.plugin.backend import SearchBackend
from isr.plugin.config import MANIFEST, IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.embedded.writer import EmbeddedWriter
from isr.plugin.es.backend import EsBackend
from isr.plugin.es.writer import EsWriter, parse_es_target
from isr.plugin.writer import EsOptions, IndexWriter, is_url

__all__ = ["check_target", "create_writer", "open_backend", "open_writer", "writer_for"]


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
        return EsWriter.create(str(target), config, es or EsOptions())
    path = Path(target)
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()  # EmbeddedIndex.create refuses any existing path
    return EmbeddedWriter(EmbeddedIndex.create(path, config))


def open_backend(target: str | Path, es: EsOptions | None = None) -> SearchBackend:
    """A read-only search backend over the index at `target` (a directory or an
    ``http(s)://host:port/INDEX`` URL; `es` gives an Elasticsearch index its sidecar and key)."""
    es = es or EsOptions()
    if not is_url(target):
        check_target(target, es)
        return EmbeddedIndex.open(Path(target), readonly=True)
    url, index = parse_es_target(str(target))
    return EsBackend.open(Elasticsearch(url, api_key=es.api_key), index, es.sidecar)


def writer_for(backend: EmbeddedIndex | EsBackend) -> IndexWriter:
    """The loader's writer over an index its caller holds open (the caller closes the index;
    the loader leaves a writer it did not open open)."""
    if isinstance(backend, EmbeddedIndex):
        return EmbeddedWriter(backend)
    return EsWriter(backend, f"elasticsearch index {backend.index}")
