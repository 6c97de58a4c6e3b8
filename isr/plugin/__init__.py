"""isr.plugin, the engine's public face: what ingest, eval and the app import.

Search::

    from isr.plugin import SearchOptions, open_backend, search

    backend = open_backend("gallery/")  # or "http://localhost:9200/gallery" (+ EsOptions)
    result = search(backend, query, SearchOptions(size=10))  # query: an Encoded batch of one

Write (the loader's side, see :func:`isr.ingest.loader.load_gallery`): :func:`open_writer` /
:func:`create_writer` give an :class:`IndexWriter` for a directory or an ``http(s)://`` URL.

The subpackages (``store``, ``embedded``, ``es``, ``http``) are the engine's insides; code
outside the engine imports this module, never them (import-linter checks it, see
pyproject.toml). The HTTP facade (``isr.plugin.http``) is for the app layer only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from isr.plugin.backend import (
    MAX_ID_BYTES,
    MODES,
    Candidates,
    FetchedDoc,
    SearchBackend,
    Stage,
    TextEncoder,
    check_encoder,
    check_ids,
    id_problem,
)
from isr.plugin.config import FRAGMENT_HOMES, MANIFEST, IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.filters import Filter, parse_filter
from isr.plugin.pipeline import (
    ABLATIONS,
    MAX_K,
    Hit,
    KeywordOptions,
    Profile,
    SearchOptions,
    SearchResult,
    search,
)
from isr.plugin.store.codecs import CODECS
from isr.plugin.store.fragments import FragmentStore
from isr.plugin.writer import INGEST_KEY, EsOptions, IndexWriter, is_url

if TYPE_CHECKING:  # loaded on first use, below: they import torch and the Elasticsearch client
    from isr.plugin.es.backend import EsBackend
    from isr.plugin.store.maxsim import MaxSimScorer, int8_fast, maxsim
    from isr.plugin.targets import (
        check_target,
        create_writer,
        open_backend,
        open_writer,
        writer_for,
    )

# name -> the module that defines it, imported on first use (PEP 562): `import isr.plugin`
# stays light (no torch, no Elasticsearch client, ~0.2 s), so `isr --help` and `isr index stats`
# start fast; what needs the heavy modules pays for them when it first touches these names
_LAZY = {
    "EsBackend": "isr.plugin.es.backend",
    "MaxSimScorer": "isr.plugin.store.maxsim",
    "maxsim": "isr.plugin.store.maxsim",
    "int8_fast": "isr.plugin.store.maxsim",
    "check_target": "isr.plugin.targets",
    "create_writer": "isr.plugin.targets",
    "open_backend": "isr.plugin.targets",
    "open_writer": "isr.plugin.targets",
    "writer_for": "isr.plugin.targets",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'isr.plugin' has no attribute {name!r}")


__all__ = [
    "ABLATIONS",
    "CODECS",
    "FRAGMENT_HOMES",
    "INGEST_KEY",
    "MANIFEST",
    "MAX_ID_BYTES",
    "MAX_K",
    "MODES",
    "Candidates",
    "EmbeddedIndex",
    "EsBackend",
    "EsOptions",
    "FetchedDoc",
    "Filter",
    "FragmentStore",
    "Hit",
    "IndexConfig",
    "IndexWriter",
    "KeywordOptions",
    "MaxSimScorer",
    "Profile",
    "SearchBackend",
    "SearchOptions",
    "SearchResult",
    "Stage",
    "TextEncoder",
    "check_encoder",
    "check_ids",
    "check_target",
    "create_writer",
    "id_problem",
    "int8_fast",
    "is_url",
    "maxsim",
    "open_backend",
    "open_writer",
    "parse_filter",
    "search",
    "writer_for",
]
