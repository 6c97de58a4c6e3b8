"""The sidecar: fragments of an Elasticsearch-backed isr index, keyed by Elasticsearch `_id`.

Entry point: :class:`Sidecar` (`create`, `open`, `upsert`, `delete`, `commit`, `rollback`,
`rows_of`, `gather`, `refresh`, `close`). One directory, built from the embedded index's parts:

    manifest.json   IndexConfig + the Elasticsearch index name + a mirror of the counts
    docs.sqlite     DocTable: `_id` <-> row, tombstones, the commit point (meta) and
                    application entries committed with it (an ingest's progress)
    fragments/      FragmentStore: row -> fragments (codec, memory-mapped)
    write.lock      held by the one writer

The commit protocol is the embedded index's, from the same place
(:class:`~isr.plugin.store.segment.Segment`): fsync the fragment files, then commit the id
table (new rows, tombstones, checksums, `n_rows`, `generation`) in one sqlite transaction. A writer opening
the directory cuts off a fragment tail past the committed `n_rows` (a batch killed before its
commit). Readers never truncate (a writer in another process may be mid-batch); they read the
committed rows and `refresh` when the id table says a newer generation committed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap

from isr.errors import Conflict, InvalidInput, NotFound
from isr.plugin.config import IndexConfig, read_manifest, write_manifest
from isr.plugin.store.doctable import check_app_meta
from isr.plugin.store.fragments import FragmentStore
from isr.plugin.store.segment import Committed, Segment, create_aside

__all__ = ["Sidecar"]

RETIRE_AFTER_S = 60.0  # a reader closes a store replaced by `refresh` this much later


class Sidecar:
    """Fragments by document id for one Elasticsearch index. One writer; many readers."""

    FRAGMENTS = "fragments"

    def __init__(self, path: Path, config: IndexConfig, es_index: str, readonly: bool) -> None:
        self.path = path
        self.es_index = es_index
        self.readonly = readonly
        self.segment = Segment(path, readonly, "sidecar")
        self.table = self.segment.table
        try:
            self.segment.adopt_config(config)
            with self.table.read():  # one generation
                c = self._committed()
                self.config = self.segment.check_config(c, config)
                self.n_rows, self.generation = c.n_rows, c.generation
                self._app_meta = c.app
                self.store = self._open_store(self.n_rows)
                self.alive = BitMap(range(self.n_rows)) - BitMap(self.table.deleted_rows())
        except BaseException:
            self.segment.close()
            raise
        self._refresh_lock = threading.Lock()
        self._retired: list[tuple[float, FragmentStore]] = []

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: IndexConfig, es_index: str) -> Sidecar:
        path = Path(path)
        create_aside(path, config, _state(es_index, 0, 0, 0), cls.FRAGMENTS)
        return cls(path, config, es_index, readonly=False)

    @classmethod
    def open(
        cls, path: str | Path, readonly: bool = False, expect: IndexConfig | None = None
    ) -> Sidecar:
        path = Path(path)
        config, state = read_manifest(path)
        if state.get("backend") != "elasticsearch":
            raise Conflict(f"{path} is not an isr sidecar (an embedded index?)")
        if expect is not None:
            config.check_compatible(expect)
        return cls(path, config, str(state.get("es_index", "")), readonly)

    def close(self) -> None:
        if not self.readonly:
            self.rollback()
        self.store.close()
        for _, old in self._retired:
            old.close()
        self._retired = []
        self.segment.close()

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _committed(self) -> Committed:
        return self.segment.committed()

    def _open_store(self, n_rows: int) -> FragmentStore:
        c = self.config
        return FragmentStore.open(
            self.path / self.FRAGMENTS, c.d_frag, c.max_frags, c.codec, n_rows, self.readonly
        )

    def refresh(self) -> bool:
        """Reader: pick up batches committed since open (or the last refresh)."""
        with self._refresh_lock, self.table.read():  # one generation
            c = self._committed()
            if c.generation == self.generation:
                return False
            store = self._open_store(c.n_rows)
            now = time.monotonic()
            # Searches in other threads may still read the old store: close it a while later.
            self._retired.append((now, self.store))
            while self._retired and now - self._retired[0][0] > RETIRE_AFTER_S:
                self._retired.pop(0)[1].close()
            self.store = store
            self.alive = BitMap(range(c.n_rows)) - BitMap(self.table.deleted_rows())
            self.n_rows, self.generation = c.n_rows, c.generation
            self._app_meta = c.app
            return True

    # -- writes --------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.readonly:
            raise Conflict(f"{self.path}: sidecar opened read-only")

    def upsert(self, ids: Sequence[str], fragments: np.ndarray, mask: np.ndarray) -> list[int]:
        """Store fragments (B, n, d) with mask (B, n) under ids, replacing live ones; rows."""
        self._writable()
        ids = list(ids)
        if len(ids) != len(fragments):
            raise InvalidInput(f"sidecar: {len(ids)} ids for {len(fragments)} items")
        if len(set(ids)) != len(ids):
            raise InvalidInput("sidecar: duplicate ids within the batch")
        existing = self.table.live_rows(ids)
        start = len(self.store)
        rows = list(range(start, start + len(ids)))
        try:
            if existing:
                self.table.tombstone(list(existing.values()), self.generation + 1)
            self.table.insert(rows, ids, [None] * len(ids))
            self.store.append(fragments, mask)
        except BaseException:
            self.rollback()
            raise
        return rows

    def delete(self, ids: Sequence[str]) -> int:
        """Tombstone the live documents among ids; returns how many."""
        self._writable()
        rows = list(self.table.live_rows(list(ids)).values())
        self.table.tombstone(rows, self.generation + 1)
        return len(rows)

    def commit(self, meta: Mapping[str, Any] | None = None) -> int:
        """Make pending writes durable: fsync fragments, then commit the id table.

        meta: application entries (JSON values by name) committed in the same transaction;
        read back with :meth:`committed_meta`. A commit with meta and no pending write still
        commits.
        """
        self._writable()
        app = check_app_meta(meta)
        if not self.segment.pending and len(self.store) == self.n_rows and not app:
            return self.generation
        n_rows = len(self.store)
        ranges = self.store.pending_ranges(self.FRAGMENTS + "/")
        self.segment.commit(
            (self.store.sync,), ranges, n_rows=n_rows, generation=self.generation + 1, app=app
        )
        self.store.committed()
        self._app_meta.update(app)
        self.n_rows, self.generation = n_rows, self.generation + 1
        self.alive = BitMap(range(n_rows)) - BitMap(self.table.deleted_rows())
        write_manifest(
            self.path,
            self.config,
            _state(self.es_index, self.generation, len(self.alive), n_rows),
        )
        return self.generation

    def rollback(self) -> None:
        """Drop every uncommitted write."""
        self._writable()
        self.segment.rollback()
        if len(self.store) != self.n_rows:
            self.store.close()
            self.store = self._open_store(self.n_rows)

    # -- reads ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.alive)

    def committed_meta(self) -> dict[str, Any]:
        """The application entries of the last commit (see :meth:`commit`)."""
        out: dict[str, Any] = json.loads(json.dumps(self._app_meta))  # a copy to change
        return out

    def nbytes(self) -> int:
        """Bytes on disk: committed fragment rows and the id table (with its WAL)."""
        return self.store.nbytes_per_row() * self.n_rows + self.table.nbytes()

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Committed live rows of the ids that have one (absent ids are left out)."""
        rows = self.table.live_rows(ids)
        if self.readonly and any(r >= self.n_rows for r in rows.values()):
            self.refresh()  # a writer committed since we looked
        return {d: r for d, r in rows.items() if r < self.n_rows}

    def ids_at(self, rows: Sequence[int]) -> list[str]:
        docs = self.table.docs_at(rows)
        try:
            return [docs[int(r)][0] for r in rows]
        except KeyError as e:
            raise NotFound(f"sidecar: no document at row {e}") from None

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.store.gather(rows)

    def live_rows(self) -> np.ndarray:
        return np.asarray(self.alive.to_array(), dtype=np.int64)

    def iter_ids(self) -> Iterator[str]:
        return self.table.iter_live_ids()


def _state(es_index: str, generation: int, documents: int, rows: int) -> dict[str, object]:
    return {
        "backend": "elasticsearch",
        "es_index": es_index,
        "generation": generation,
        "documents": documents,
        "rows": rows,
    }
