"""The loader's writer for Elasticsearch: an isr index in Elasticsearch (+ its sidecar).

Entry point: :class:`EsWriter` (``EsWriter.open(url, es)`` -> writer or None,
``EsWriter.create(url, config, es)``), an :class:`~isr.plugin.writer.IndexWriter` over
:class:`~isr.plugin.es.backend.EsBackend`; :func:`isr.plugin.writer.open_writer` picks it for a
``--index http(s)://host:port/INDEX`` target (:func:`parse_es_target` reads one).

When things happen (the embedded index's contract, carried over to Elasticsearch):

- ``add`` / ``upsert`` send nothing to Elasticsearch. They keep each batch's documents in memory
  (ids, top R_I keywords, fast vectors, `_source`, and in the rank_vectors layout the real
  fragments: memory grows with ``commit_every``, not with the gallery). In the sidecar layout
  the fragments go into the sidecar at once, uncommitted, as the embedded index writes its
  files before its commit.
- ``commit(progress)`` (1) commits the sidecar (fsync + one sqlite transaction), so a document
  never becomes visible without its fragments; (2) sends the kept documents with
  ``streaming_bulk`` (429s retried with backoff); Elasticsearch acknowledges an item once it
  is in the translog, which with the default ``index.translog.durability: request`` is on
  disk; (3) refreshes the index, so committed documents are searchable and counted;
  (4) only then stores the progress. A crash or an error anywhere in (1)-(3) leaves the
  previous progress, so a resume re-sends the batch; writes are upserts by id, so re-sending
  replaces and never duplicates. The progress never runs ahead of the documents.
- ``close()`` without ``commit`` drops the kept documents and rolls the sidecar back: nothing
  of the uncommitted batch reaches Elasticsearch or the sidecar. What Elasticsearch cannot
  undo is a commit that failed half-way: the documents of its bulk that succeeded stay; no
  progress covers them, and a resume sends them again. A failed bulk raises
  :class:`~isr.plugin.es.backend.BulkIngestError` after deleting the sidecar fragments of
  the failed documents that Elasticsearch did not hold before.

Index settings during a load: the first commit that sends documents sets
``refresh_interval: -1`` (and, on an index this writer created, ``number_of_replicas: 0``),
saving the replaced values in the mapping's ``_meta.isr_app.bulk_load`` first; :meth:`EsWriter.close`
(or :meth:`EsWriter.finish`) restores them. Without periodic refreshes Lucene writes few large
segments instead of one a second, and merging HNSW segments (which rebuilds their graphs) is what
slowed long loads down; each commit still refreshes, so committed documents stay searchable. A
load killed before it restores leaves the entry; the next :meth:`EsWriter.open` restores it.

Where the progress lives (one rule): beside the fragments. With a sidecar, in the sidecar's
meta rows (``app.ingest``, its own sqlite transaction right after the bulk); with fragments in
Elasticsearch (rank_vectors), in the index mapping's ``_meta.isr_app.ingest``, next to and
apart from ``_meta.isr`` (the config and layout, which carry the bundle fingerprint the loader
checks). The sidecar is the one local, transactional, write-locked store a sidecar index has;
an index without one keeps everything, its progress included, in Elasticsearch.

Which ids exist: Elasticsearch decides (a realtime ``mget``, so documents sent but not yet
refreshed count), in both layouts, because a sidecar may hold fragments of documents
Elasticsearch never got (a crash between (1) and (2)). ``add`` refuses an id Elasticsearch
holds or this writer keeps; ``upsert`` counts those as replaced.

One writer per index: the sidecar's write lock enforces it in the sidecar layout; in the
rank_vectors layout nothing does, so do not run two loaders into one index.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from elasticsearch import Elasticsearch

from isr.encoders.record import Encoded
from isr.errors import Conflict, InvalidInput, NotFound
from isr.plugin.config import MANIFEST, IndexConfig, index_name_problem, read_manifest
from isr.plugin.es.backend import EsBackend, PendingDocs
from isr.plugin.es.mapping import EsLayout
from isr.plugin.writer import INGEST_KEY, EsOptions

__all__ = ["EsWriter", "parse_es_target"]


def parse_es_target(url: str) -> tuple[str, str]:
    """``http(s)://[user:pass@]host[:port][/prefix]/INDEX`` -> (the cluster URL, INDEX).

    The last path segment names the index; anything before it is a path prefix (a proxy).
    """
    u = urlsplit(url)
    try:
        _ = u.port  # raises ValueError on a malformed port
    except ValueError as e:
        raise InvalidInput(f"--index {url}: bad port ({e})") from e
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InvalidInput(f"--index {url}: expected http(s)://host:port/INDEX")
    if u.query or u.fragment:
        raise InvalidInput(f"--index {url}: no query string or #fragment, only host and index")
    segs = [s for s in u.path.split("/") if s]
    if not segs:
        raise InvalidInput(
            f"--index {url}: the URL names no Elasticsearch index; put the index name as its "
            f"last path segment, e.g. {u.scheme}://{u.netloc}/gallery"
        )
    index = unquote(segs[-1])
    _check_index_name(index, url)
    prefix = "/" + "/".join(segs[:-1]) if len(segs) > 1 else ""
    return urlunsplit((u.scheme, u.netloc, prefix, "", "")), index


def _check_index_name(name: str, url: str) -> None:
    why = index_name_problem(name)
    if why:
        raise InvalidInput(f"--index {url}: {name!r} is not a valid Elasticsearch index: {why}")


def _check_sidecar(path: Path, index: str) -> None:
    """Refuse a sidecar directory that is missing or belongs to another index."""
    if not (path / MANIFEST).exists():
        raise NotFound(
            f"--sidecar {path}: no sidecar there; Elasticsearch index {index!r} keeps its "
            "fragments in a sidecar: pass the directory it was created with"
        )
    owner = str(read_manifest(path)[1].get("es_index", ""))
    if owner != index:
        raise Conflict(f"--sidecar {path} holds the fragments of index {owner!r}, not {index!r}")


def _display(url: str) -> str:
    """The target as reports show it: without credentials."""
    u = urlsplit(url)
    host = u.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if u.port is not None:
        netloc += f":{u.port}"
    return urlunsplit((u.scheme, netloc, u.path.rstrip("/"), "", ""))


class EsWriter:
    """Writes into an isr index in Elasticsearch; see the module doc for the commit rules."""

    def __init__(self, backend: EsBackend, target: str, new_index: bool = False) -> None:
        self.backend = backend
        self._target = target
        self._new_index = new_index  # created by this writer: replicas off during the load
        self._bulk = False  # begin_bulk_load done, end_bulk_load due
        self._pending: list[PendingDocs] = []
        self._pending_ids: set[str] = set()
        self._new: set[str] = set()  # kept ids Elasticsearch did not hold when they came

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def open(cls, url: str, es: EsOptions) -> EsWriter | None:
        """The writer of the existing index `url` names, or None when there is none yet."""
        base, index = parse_es_target(url)
        client = Elasticsearch(base, api_key=es.api_key)
        try:
            if not EsBackend.index_exists(client, index):
                client.close()
                return None
            _, layout = EsBackend.read_layout(client, index)
            if layout.fragments != es.fragments:
                raise Conflict(
                    f"Elasticsearch index {index!r} keeps its fragments in "
                    f"{layout.fragments}, not {es.fragments}: pass --es-fragments "
                    f"{layout.fragments}"
                    + (" and its --sidecar" if layout.fragments == "sidecar" else "")
                )
            side = es.sidecar if layout.fragments == "sidecar" else None
            if side is not None:
                _check_sidecar(side, index)
            backend = EsBackend.open(client, index, side, readonly=False, device="cpu")
        except BaseException:
            client.close()
            raise
        try:
            backend.end_bulk_load()  # what a killed load left (its first commit sets it again)
        except BaseException:
            backend.close()
            client.close()
            raise
        return cls(backend, _display(url))

    @classmethod
    def create(cls, url: str, config: IndexConfig, es: EsOptions) -> EsWriter:
        """Create the Elasticsearch index (and its sidecar, where fragments go there)."""
        base, index = parse_es_target(url)
        layout = EsLayout(
            fragments=es.fragments, m=config.hnsw_m, ef_construction=config.hnsw_ef_construction
        )
        side = es.sidecar
        if side is not None and side.is_dir() and not any(side.iterdir()):
            side.rmdir()  # Sidecar.create refuses any existing path
        if side is not None and side.exists():
            raise Conflict(
                f"--sidecar {side} already exists, but Elasticsearch has no index {index!r} "
                "to go with it: give a new directory, or delete that one first"
            )
        client = Elasticsearch(base, api_key=es.api_key)
        try:
            backend = EsBackend.create(client, index, config, layout, side, device="cpu")
        except BaseException:
            client.close()
            raise
        return cls(backend, _display(url), new_index=True)

    def finish(self) -> None:
        """End the bulk load: restore the index settings the first commit replaced (see
        :meth:`EsBackend.begin_bulk_load`). :meth:`close` calls it; a caller holding the
        backend open (:func:`isr.plugin.writer_for`) calls it after the load."""
        if self._bulk:
            self._bulk = False
            self.backend.end_bulk_load()

    def close(self) -> None:
        """Restore the bulk-load settings, drop what was not committed (the kept documents,
        the sidecar's pending rows)."""
        self._drop_pending()
        try:
            self.finish()
        finally:
            try:
                self.backend.close()  # the sidecar rolls back
            finally:
                self.backend.client.close()

    # -- the IndexWriter face ------------------------------------------------------------
    @property
    def config(self) -> IndexConfig:
        return self.backend.config

    @property
    def target(self) -> str:
        return self._target

    def add(
        self, ids: Sequence[str], items: Encoded, sources: Sequence[Mapping[str, Any] | None]
    ) -> None:
        id_list, srcs = self.backend.check_batch(ids, items, sources)
        have = self._have(id_list)
        if have:
            some = sorted(have)[:5]
            raise Conflict(
                f"{len(have)} of {len(id_list)} ids are already in Elasticsearch index "
                f"{self.backend.index!r} (e.g. {some}); upsert replaces documents"
            )
        self._keep(id_list, items, srcs, have)

    def upsert(
        self, ids: Sequence[str], items: Encoded, sources: Sequence[Mapping[str, Any] | None]
    ) -> int:
        id_list, srcs = self.backend.check_batch(ids, items, sources)
        have = self._have(id_list)
        self._keep(id_list, items, srcs, have)
        return len(have)

    def commit(self, progress: Mapping[str, Any]) -> None:
        entry = _json_copy(progress)  # checked before anything is sent
        pending, new = self._pending, self._new
        self._drop_pending()  # sent or failed, the kept documents are spent
        if not self._bulk and pending:
            self.backend.begin_bulk_load(replicas=self._new_index)
            self._bulk = True
        # (1) fragments durable, (2) the bulk, (3) a refresh, also after a partial failure
        self.backend.write(pending, new, refresh_after=True)
        self.backend.put_app_meta({INGEST_KEY: entry})  # (4) beside the fragments

    def progress(self) -> dict[str, Any]:
        got = self.backend.app_meta().get(INGEST_KEY, {})
        return got if isinstance(got, dict) else {}

    def stats(self) -> dict[str, Any]:
        """Live documents (Elasticsearch's count; commits refresh) and bytes on disk: the
        index's primary shards plus the sidecar."""
        b = self.backend
        live = len(b)
        files = b.nbytes()
        total = sum(files.values())
        return {
            "target": self.target,
            "index": b.index,
            "config": b.config.to_json(),
            "layout": b.layout.to_json(),
            "documents": live,
            "bytes": files,
            "bytes_total": total,
            "bytes_per_document": round(total / live, 1) if live else None,
        }

    # -- internals -----------------------------------------------------------------------
    def _have(self, ids: list[str]) -> set[str]:
        """The ids among `ids` that Elasticsearch holds or this writer keeps."""
        kept = self._pending_ids.intersection(ids)
        return kept | self.backend.existing([d for d in ids if d not in kept])

    def _keep(
        self,
        ids: list[str],
        items: Encoded,
        srcs: list[Mapping[str, Any] | None],
        have: set[str],
    ) -> None:
        if not ids:
            return
        try:
            pending, _ = self.backend.stage(ids, items, srcs)
        except BaseException:
            self._drop_pending()  # the sidecar rolled back every pending write
            raise
        self._pending.append(pending)
        self._pending_ids.update(ids)
        self._new.update(d for d in ids if d not in have)

    def _drop_pending(self) -> None:
        self._pending, self._pending_ids, self._new = [], set(), set()


def _json_copy(progress: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(progress, Mapping):
        raise InvalidInput(f"progress: expected a mapping, got {type(progress).__name__}")
    try:
        out: dict[str, Any] = json.loads(json.dumps(dict(progress), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"progress: not serialisable as JSON ({e})") from e
    return out
