"""The embedded index: one directory on disk, no server, the whole isr data model.

Entry point: :class:`EmbeddedIndex` (`create`, `open`, `add`, `upsert`, `delete`, `commit`,
`rollback`, `stats`, `close`); it is also the embedded :class:`isr.plugin.backend.SearchBackend`
(`candidates`, `score_keys`, `exhaustive`, `fetch`). Layout of the directory:

    manifest.json   config + a mirror of the committed counts (human-readable)
    docs.sqlite     id <-> row, _source, tombstones, term ids, and the commit point (meta)
    fast.f32        (N, d_fast) fast vectors            -> hnsw.faiss (derived, snapshotted)
    keywords.i32    (N, R_I) keyword term ids           -> label bitmaps (derived, in memory)
    fragments/      fragment store (codec, counts)      -> max-sim rerank
    write.lock      held by the one writer

A commit fsyncs the row files, then commits the document table (new rows, tombstones,
`n_rows`, `generation`, the configuration, the checksums of the appended ranges) in one
sqlite transaction (:mod:`isr.plugin.store.segment`). Opening reconciles every file with the
committed `n_rows`: a tail past it (a batch killed before its commit) is cut off, derived
structures are rebuilt or caught up. So a crash loses at most the uncommitted batch.

Readers see snapshots: everything an open (or a :meth:`EmbeddedIndex.refresh`) reads from
the document table comes from one read transaction, and a search reads one
:class:`Snapshot` (generation, row count, live rows). Derived structures only grow, so a
refresh extends them in place and then publishes the new snapshot in one assignment; a
search that started before it keeps its own.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from pyroaring import BitMap

from isr.encoders.record import Encoded, Keywords
from isr.errors import Conflict, CorruptIndex, InvalidInput, NotFound
from isr.plugin.backend import Candidates, FetchedDoc, StageTimer, check_ids, relax_reason
from isr.plugin.config import MANIFEST, IndexConfig, read_manifest, write_manifest
from isr.plugin.embedded.fast_index import FastIndex, KnnResult
from isr.plugin.embedded.fields import FieldIndex
from isr.plugin.embedded.postings import KeywordPostings
from isr.plugin.filters import Filter
from isr.plugin.store.doctable import check_app_meta
from isr.plugin.store.durable import fsync_dir
from isr.plugin.store.fragments import FragmentStore
from isr.plugin.store.segment import Segment, check_ranges, create_aside, verify_ranges
from isr.plugin.store.writelock import WriteLock

if TYPE_CHECKING:
    from isr.plugin.pipeline import SearchOptions
    from isr.plugin.store.maxsim import MaxSimScorer

__all__ = ["EmbeddedIndex", "Snapshot"]

COMPACT_BATCH = 5_000  # live rows rewritten per batch by a compaction
COMPACT_DONE = "compact.done"  # marks a compaction's new directory as complete


SNAPSHOT_EVERY = 50_000  # rows added since the last HNSW snapshot that trigger a new one


def _check_sources(
    sources: Sequence[Mapping[str, Any] | None] | None, n: int
) -> tuple[list[Mapping[str, Any] | None], list[str | None]]:
    if sources is None:
        return [None] * n, [None] * n
    sources = list(sources)
    if len(sources) != n:
        raise InvalidInput(f"sources: {len(sources)} sources for {n} items")
    texts: list[str | None] = []
    for i, src in enumerate(sources):
        if src is None:
            texts.append(None)
            continue
        if not isinstance(src, Mapping):
            raise InvalidInput(
                f"sources[{i}]: _source must be a JSON object, got {type(src).__name__}"
            )
        try:
            texts.append(json.dumps(src, allow_nan=False, ensure_ascii=False))
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"sources[{i}]: not serialisable as JSON ({e})") from e
    return sources, texts


@dataclass(frozen=True)
class Snapshot:
    """One committed generation as a search sees it: rows < n_rows, of which `alive` live."""

    generation: int
    n_rows: int
    alive: BitMap


class EmbeddedIndex:
    """An isr index in one directory. One writer at a time; any number of read-only openers."""

    FRAGMENTS = "fragments"
    # tests: called between an open's first read of the committed state and the rest
    _between_reads: Callable[[], None] | None = None

    def __init__(self, path: Path, config: IndexConfig, readonly: bool, device: str | None):
        self.path = path
        self.readonly = readonly
        self.segment = seg = Segment(path, readonly, "index")
        self.table = seg.table
        self._ino = (path / seg.table.FILE).stat().st_ino  # a rewrite swaps the file
        self._refresh_lock = threading.Lock()
        try:
            self._load(config, device)
        except BaseException:
            self._close_files()
            seg.close()
            raise

    def _load(self, manifest_config: IndexConfig, device: str | None) -> None:
        path, readonly, table = self.path, self.readonly, self.table
        self.segment.adopt_config(manifest_config)
        with table.read():  # one generation: counts, tombstones, terms and sources
            c = self.segment.committed()
            self.config = config = self.segment.check_config(c, manifest_config)
            if EmbeddedIndex._between_reads is not None:
                EmbeddedIndex._between_reads()
            n = c.n_rows
            self._app_meta = c.app
            self._epoch = int(c.meta.get("epoch", 0))  # bumped by a compaction
            self.fast = FastIndex(path, config, n, readonly)
            self.keywords = KeywordPostings(path, config.r_i, n, readonly)
            self.fast.labels = self.keywords.labels  # the compressed copy's lists (keyword_pq)
            self.fragments = FragmentStore.open(
                path / self.FRAGMENTS, config.d_frag, config.max_frags, config.codec, n, readonly
            )
            self._verify_tail(None, n)
            self.fields = FieldIndex(c.meta.get("mapping", {}), config.stored_fields)
            rows: list[int] = []
            srcs: list[Any] = []
            for row, text in table.iter_sources():
                if row < n:
                    rows.append(row)
                    srcs.append(orjson.loads(text))
            self.fields.add(rows, srcs)
            self.fields._grow(n)
            alive = BitMap(range(n)) - BitMap(table.deleted_rows())
            self._terms = table.terms()  # tid -> term
            self._term_of: dict[str, int] | None = None  # its inverse, built on first use
        self._snap = Snapshot(c.generation, n, alive)
        self.fast.refresh_compressed()  # in memory only: from COMPRESSED_MIN_ROWS rows
        self._device = device
        self._scorer: MaxSimScorer | None = None  # built on the first rerank: torch loads then
        self._preload = False
        self._pending: list[tuple[int, Mapping[str, Any] | None]] = []
        self._pending_deletes: set[int] = set()
        self._mapping_before = dict(self.fields.mapping)

    # -- the snapshot ----------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snap

    @property
    def n_rows(self) -> int:
        return self._snap.n_rows

    @property
    def generation(self) -> int:
        return self._snap.generation

    @property
    def alive(self) -> BitMap:
        return self._snap.alive

    def _row_files(self) -> list[tuple[str, int]]:
        """(file relative to the index, bytes per row) of every committed row file."""
        f = self.fragments
        return [
            (FastIndex.VECTORS, self.fast.vectors.row_bytes),
            (KeywordPostings.FILE, self.keywords.labels.row_bytes),
            (f"{self.FRAGMENTS}/fragments.bin", f.row_bytes),
            (f"{self.FRAGMENTS}/counts.u8", 1),
        ]

    def _verify_tail(self, start_row: int | None, n_rows: int) -> None:
        """Check the committed checksums of rows [start_row, n_rows); None: the last range
        of each file only (a writer's open: the tail a crash would have hit)."""
        for name, rb in self._row_files():
            if start_row is None:
                got = self.table.ranges(name, max(n_rows * rb - 1, 0))
                lo = got[-1][0] if got else n_rows * rb
            else:
                lo = start_row * rb
            check_ranges(self.path, self.table, name, lo, n_rows * rb)

    def refresh(self) -> bool:
        """Reader: catch up with the commits made since this snapshot; True if one was.

        Reads only what changed (rows past the old n_rows, tombstones of later generations,
        new terms), extends the derived structures, then publishes the new snapshot in one
        assignment: a search never sees half of a refresh and never waits for one. A
        writer's own state is always current (returns False).
        """
        if not self.readonly:
            return False
        with self._refresh_lock:
            old = self._snap
            try:
                ino = (self.path / self.table.FILE).stat().st_ino
            except FileNotFoundError:
                ino = -1
            if ino != self._ino:
                raise Conflict(
                    f"{self.path}: the index was rewritten (compacted or deleted) since this "
                    "reader opened it; open it again"
                )
            with self.table.read():
                c = self.segment.committed()
                if c.generation == old.generation:
                    return False
                if c.n_rows < old.n_rows or int(c.meta.get("epoch", 0)) != self._epoch:
                    raise Conflict(
                        f"{self.path}: the index was rewritten (compacted) since this reader "
                        "opened it; open it again"
                    )
                n = c.n_rows
                terms = self.table.terms(after=max(self._terms, default=-1))
                if self.table.has_dels:
                    dels = self.table.deleted_since(old.generation)
                else:
                    dels = self.table.deleted_rows()
                sources = self.table.sources_between(old.n_rows, n)
            self.keywords.labels.grow(n)
            self.fragments.grow(n)
            self.fast.vectors.grow(n)
            self._verify_tail(old.n_rows, n)
            self._terms.update(terms)
            self._term_of = None
            self.keywords.publish(n)
            self.fields.mapping.update(c.meta.get("mapping", {}))
            self.fields.add([r for r, _ in sources], [orjson.loads(t) for _, t in sources])
            self.fields._grow(n)
            self.fast.take(n)
            if self._preload:  # the grown files were remapped: map them in before publishing
                self._map_all()
            alive = old.alive.copy()
            alive.add_range(old.n_rows, n)
            alive.difference_update(BitMap(dels))
            self._app_meta = c.app
            self._snap = Snapshot(c.generation, n, alive)  # the publication
            return True

    def preload(self) -> None:
        """Map every page of the files a search reads into this process now, and again after
        each refresh that remaps them (Elasticsearch's ``index.store.preload``): the fast
        vectors (the exact scores of the kNN window), the fragment store (the rerank) and the
        keyword rows (the fetch). Costs their size in page cache (reading them from disk where
        it lacks them: 1.6 s for 3.8 GiB of fragments, cached) and saves the page fault each
        first touch of a page costs a query otherwise: at 1M documents, where the warm-up
        passes leave most pages unmapped, that was ~10 ms of a 39 ms query (BENCHMARKS.md,
        issue 16, session 3). For serving; the files are mapped read-only, so a writer's own
        state is unaffected."""
        self._preload = True
        self._map_all()

    def _map_all(self) -> None:
        for f in (self.fast.vectors, self.keywords.labels):
            f.map_in()
        self.fragments.map_in()

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: str | Path, config: IndexConfig, device: str | None = None
    ) -> EmbeddedIndex:
        path = Path(path)
        state = {"generation": 0, "documents": 0, "rows": 0}
        create_aside(path, config, state, cls.FRAGMENTS, mapping={})
        return cls(path, config, readonly=False, device=device)

    @staticmethod
    def recover(path: Path) -> None:
        """Finish or undo a compaction killed half-way (see :meth:`compact`)."""
        new, old = path.with_name(path.name + ".compact"), path.with_name(path.name + ".old")
        if not path.exists() and (new / COMPACT_DONE).exists():
            os.replace(new, path)  # killed between its two renames: the new one is complete
            fsync_dir(path.parent)
        for leftover in (new, old):
            if leftover.exists() and path.exists():
                shutil.rmtree(leftover, ignore_errors=True)

    @classmethod
    def compact(cls, path: str | Path, device: str | None = None) -> dict[str, Any]:
        """Rewrite the index with its live documents only (tombstoned rows dropped).

        Holds the write lock throughout (Conflict while another writer works). The live rows
        are written into a new directory `NAME.compact` through the ordinary add/commit path
        (checksums, graph, fields), marked complete, then swapped in by two renames
        (`NAME` -> `NAME.old`, `NAME.compact` -> `NAME`); a process killed at any point
        leaves either the old index or the complete new one (:meth:`recover`, run by every
        open). Readers that opened the old directory keep their files and their snapshot;
        their next refresh says the index was rewritten (Conflict), and the server reopens.
        """
        path = Path(path)
        t0 = time.perf_counter()
        old_dir = path.with_name(path.name + ".old")
        new_dir = path.with_name(path.name + ".compact")
        src = cls.open(path)
        try:
            before = src.stats()
            if new_dir.exists():
                shutil.rmtree(new_dir)
            dst = cls.create(new_dir, src.config, device=device)
            try:
                snap = src.snapshot
                live = np.asarray(snap.alive.to_array(), dtype=np.int64)
                for i in range(0, live.shape[0], COMPACT_BATCH):
                    rows = live[i : i + COMPACT_BATCH]
                    docs = src.docs_at(rows.tolist())
                    frags, mask = src.fragments.gather(rows)
                    labels = src.labels_of(rows)
                    kws = tuple(
                        Keywords(tuple(ls), tuple(1.0 - j / (len(ls) + 1) for j in range(len(ls))))
                        for ls in labels
                    )  # stored labels are already the top r_i, best first: keep that order
                    items = Encoded(src.fast.vectors_at(rows), frags, mask, kws)
                    ids = [docs[int(r)][0] for r in rows]
                    texts = [docs[int(r)][1] for r in rows]
                    srcs = [None if t is None else orjson.loads(t) for t in texts]
                    dst.add(ids, items, srcs)
                    dst.commit(wait_for_graph=False)
                app = src.committed_meta()
                dst.table.set_meta(epoch=src._epoch + 1)  # readers of the old one must reopen
                dst.commit(meta=app)
                dst.fast.snapshot()
                after = dst.stats()
            finally:
                dst.close()
            (new_dir / COMPACT_DONE).write_text("complete\n")
            fsync_dir(new_dir)
            lock = WriteLock(new_dir, "index")  # no writer may slip into the new directory
            try:
                os.replace(path, old_dir)
                os.replace(new_dir, path)
                fsync_dir(path.parent)
            finally:
                lock.release()
        finally:
            src.close()
        (path / COMPACT_DONE).unlink(missing_ok=True)
        shutil.rmtree(old_dir, ignore_errors=True)  # readers keep their open files
        return {
            "documents": after["documents"],
            "rows_before": before["rows"],
            "rows_after": after["rows"],
            "bytes_before": before["bytes_total"],
            "bytes_after": after["bytes_total"],
            "bytes_per_document_before": before["bytes_per_document"],
            "bytes_per_document_after": after["bytes_per_document"],
            "seconds": round(time.perf_counter() - t0, 2),
        }

    @classmethod
    def open(
        cls,
        path: str | Path,
        readonly: bool = False,
        expect: IndexConfig | None = None,
        device: str | None = None,
    ) -> EmbeddedIndex:
        path = Path(path)
        if not readonly or not path.exists():
            cls.recover(path)
        config, _ = read_manifest(path)
        if expect is not None:
            config.check_compatible(expect)
        index = cls(path, config, readonly=readonly, device=device)
        if not readonly:
            index._write_manifest()
        return index

    @classmethod
    def check(cls, path: str | Path) -> dict[str, Any]:
        """Verify an index in full (`isr index check`): sqlite's integrity check, every
        committed range's checksum, file sizes, term ids within the term table, fragment
        counts, the graph snapshot's checksum. Returns {"ok", "problems", "checked"}."""
        path = Path(path)
        problems: list[str] = []
        checked: dict[str, Any] = {}
        try:
            idx = cls.open(path, readonly=True)
        except (CorruptIndex, NotFound, Conflict, InvalidInput) as e:
            return {"ok": False, "problems": [str(e)], "checked": checked}
        try:
            bad = idx.table.integrity()
            problems += [f"{idx.table.file}: {b}" for b in bad[:20]]
            problems += idx.table.verify_content()
            checked["sqlite_integrity"] = "ok" if not bad else f"{len(bad)} problems"
            n = idx.n_rows
            covered = {}
            for name, rb in idx._row_files():
                end = n * rb
                problems += verify_ranges(idx.path, idx.table, name, 0, end)
                ranges = idx.table.ranges(name, 0)
                covered[name] = sum(hi - lo for lo, hi, _ in ranges if hi <= end)
                size = (idx.path / name).stat().st_size
                if size < end:
                    problems.append(f"{name}: {size} bytes, {n} committed rows need {end}")
            checked["checksummed_bytes"] = covered
            tids = np.asarray(idx.keywords.labels.view())
            known = np.array(sorted(idx._terms), dtype=np.int64)
            flat = tids.reshape(-1)
            flat = flat[flat >= 0]
            if flat.size and known.size:
                unknown = ~np.isin(flat, known)
            else:
                unknown = np.ones(flat.size, dtype=bool)
            if unknown.any():
                problems.append(
                    f"{KeywordPostings.FILE}: {int(unknown.sum())} term ids unknown to the "
                    f"document table (e.g. {int(flat[unknown][0])})"
                )
            if (tids < -1).any():
                problems.append(f"{KeywordPostings.FILE}: term ids below -1")
            checked["term_ids"] = int(flat.size)
            counts = idx.fragments.counts(np.arange(n, dtype=np.int64)) if n else np.zeros(0)
            if ((counts < 1) | (counts > idx.config.max_frags)).any():
                problems.append(f"{cls.FRAGMENTS}/counts.u8: counts outside [1, max_frags]")
            rows = idx.table.count(False) + idx.table.count(True)
            if rows != n:
                problems.append(f"{idx.table.file.name}: {rows} document rows, n_rows is {n}")
            if idx.fast.damaged_snapshot:
                problems.append(f"{FastIndex.HNSW}: fails its checksum (rebuilt from vectors)")
            vec = np.asarray(idx.fast.vectors.view())
            if not np.isfinite(vec).all():
                problems.append(f"{FastIndex.VECTORS}: non-finite values")
            checked["rows"] = n
        finally:
            idx.close()
        return {"ok": not problems, "problems": problems, "checked": checked}

    @staticmethod
    def destroy(path: str | Path) -> None:
        """Delete an index directory (refuses a directory that is not an isr index).

        Takes the write lock (a writer's index is not pulled from under it: Conflict), then
        renames the directory aside (`NAME.deleting`: the index is gone at once, atomically)
        and removes that. A delete killed half-way is finished by the next one, whether the
        directory was renamed already or is a half-emptied index without its manifest.
        """
        path = Path(path)
        aside = path.with_name(path.name + ".deleting")
        if not path.exists():
            if aside.is_dir():
                shutil.rmtree(aside)  # finish a delete killed after its rename
                return
            raise NotFound(f"no isr index at {path}")
        parts = (MANIFEST, "docs.sqlite", FastIndex.VECTORS, "fragments")
        if not path.is_dir() or not any((path / p).exists() for p in parts):
            raise NotFound(f"no isr index at {path} (none of {', '.join(parts)} there)")
        lock = WriteLock(path, "index")
        try:
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(path, aside)
            fsync_dir(path.parent)
        finally:
            lock.release()
        shutil.rmtree(aside)

    def close(self) -> None:
        if not self.readonly and self._pending_or_deletes():
            self.rollback()
        try:
            self.fast.wait()  # a failed background insertion: no snapshot, files still closed
            if not self.readonly and self.fast.snapshot_rows != self.fast.hnsw.ntotal:
                self.fast.snapshot()
        finally:
            self._close_files()
            self.segment.close()

    def _close_files(self) -> None:
        for part in ("fast", "keywords", "fragments"):
            got = getattr(self, part, None)
            if got is not None:
                got.close()

    def __enter__(self) -> EmbeddedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes --------------------------------------------------------------------------
    def add(
        self,
        ids: Sequence[str],
        items: Encoded,
        sources: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Add new documents; an id that is already live is a Conflict (use `upsert`)."""
        self._write(ids, items, sources, replace=False)

    def upsert(
        self,
        ids: Sequence[str],
        items: Encoded,
        sources: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Add documents, replacing live documents with the same ids."""
        self._write(ids, items, sources, replace=True)

    def delete(self, ids: Sequence[str], missing_ok: bool = False) -> int:
        """Tombstone live documents by id; returns how many. Unknown ids raise NotFound."""
        self._writable()
        ids = list(ids)
        found = self.table.live_rows(ids)
        missing = [d for d in ids if d not in found]
        if missing and not missing_ok:
            raise NotFound(
                f"unknown document ids: {missing[:10]}" + (" ..." if len(missing) > 10 else "")
            )
        rows = list(found.values())
        self.table.tombstone(rows, self.generation + 1)
        self._pending_deletes.update(rows)
        return len(rows)

    def _writable(self) -> None:
        if self.readonly:
            raise Conflict(f"{self.path}: opened read-only")

    def _write(
        self,
        ids: Sequence[str],
        items: Encoded,
        sources: Sequence[Mapping[str, Any] | None] | None,
        replace: bool,
    ) -> None:
        self._writable()
        if not isinstance(items, Encoded):
            raise InvalidInput(f"items: expected an Encoded batch, got {type(items).__name__}")
        n = len(items)
        ids = check_ids(ids, n)
        srcs, texts = _check_sources(sources, n)
        c = self.config
        if items.d_fast != c.d_fast:
            raise InvalidInput(
                f"fast vectors have {items.d_fast} dims, the index expects {c.d_fast}"
            )
        if items.d_frag != c.d_frag:
            raise InvalidInput(f"fragments have {items.d_frag} dims, the index expects {c.d_frag}")
        real = items.mask.sum(axis=1)
        if (real > c.max_frags).any():
            i = int(np.argmax(real > c.max_frags))
            raise InvalidInput(
                f"item {i} ({ids[i]!r}) has {int(real[i])} fragments, the index keeps at most {c.max_frags}"
            )
        existing = self.table.live_rows(ids)
        if existing and not replace:
            raise Conflict(f"ids already in the index (use upsert): {sorted(existing)[:10]}")
        new_fields = self.fields.plan(ids, srcs)
        if n == 0:
            return
        try:
            term_ids = np.full((n, c.r_i), -1, dtype=np.int32)
            terms = sorted({t for kw in items.keywords for t in kw.top(c.r_i)})
            tids = self.table.term_ids(terms, create=True)
            self._terms.update({v: k for k, v in tids.items()})
            self._term_of = None
            for i, kw in enumerate(items.keywords):
                top = kw.top(c.r_i)
                term_ids[i, : len(top)] = [tids[t] for t in top]
            start = len(self.fast.vectors)
            rows = list(range(start, start + n))
            if existing:
                self.table.tombstone(list(existing.values()), self.generation + 1)
                self._pending_deletes.update(existing.values())
            self.table.insert(rows, ids, texts)
            self.fast.append(items.fast)
            self.keywords.append(term_ids)
            self.fragments.append(items.fragments, items.mask)
            self._pending.extend(zip(rows, srcs))
            self.fields.mapping.update(
                {k: v for k, v in new_fields.items() if k not in self.fields.mapping}
            )
        except BaseException:
            self.rollback()
            raise

    def _pending_or_deletes(self) -> bool:
        return bool(self._pending or self._pending_deletes or self.segment.pending)

    def commit(self, meta: Mapping[str, Any] | None = None, wait_for_graph: bool = True) -> int:
        """Make every pending write durable and searchable; returns the new generation.

        meta: application entries (JSON values by name, e.g. an ingest's source position)
        committed atomically with this batch, so they never run ahead of or behind the
        documents; read back with :meth:`committed_meta`. A commit with meta and no pending
        write still commits. wait_for_graph=False (bulk loads): the batch is durable on
        return and its HNSW insertion runs in the background, overlapping the next batch;
        the next search, commit or close waits for it.
        """
        self._writable()
        app = check_app_meta(meta)
        if not self._pending_or_deletes() and not app:
            return self.generation
        n_rows = len(self.fast.vectors)
        assert len(self.keywords.labels) == n_rows and len(self.fragments) == n_rows
        vec, lab, frag = self.fast.vectors, self.keywords.labels, self.fragments
        ranges = [r for r in (vec.pending_range(), lab.pending_range()) if r is not None]
        ranges += frag.pending_ranges(self.FRAGMENTS + "/")
        generation = self.generation + 1
        self.segment.commit(
            (vec.sync, lab.sync, frag.sync),
            ranges,
            n_rows=n_rows,
            generation=generation,
            app=app,
            mapping=self.fields.mapping,
        )
        for store in (vec, lab, frag):
            store.committed()
        self._app_meta.update(app)
        self.fast.publish(n_rows, wait=wait_for_graph)
        self.keywords.publish(n_rows)
        rows = [r for r, _ in self._pending]
        self.fields.add(rows, [s for _, s in self._pending])
        self.fields._grow(n_rows)
        alive = self._snap.alive.copy()
        alive.update(rows)
        alive.difference_update(BitMap(self._pending_deletes))
        self._snap = Snapshot(generation, n_rows, alive)
        self._pending, self._pending_deletes = [], set()
        self._mapping_before = dict(self.fields.mapping)
        if n_rows - self.fast.snapshot_rows >= SNAPSHOT_EVERY:  # waits for the graph
            self.fast.snapshot()
        self._write_manifest()
        return self.generation

    def committed_meta(self) -> dict[str, Any]:
        """The application entries of the last commit (see :meth:`commit`)."""
        return json.loads(json.dumps(self._app_meta))  # a copy the caller may change

    def rollback(self) -> None:
        """Drop every uncommitted write."""
        self._writable()
        self.segment.rollback()
        self.fast.vectors.truncate(self.n_rows)
        self.keywords.labels.truncate(self.n_rows)
        self.fragments.close()
        self.fragments = FragmentStore.open(
            self.path / self.FRAGMENTS,
            self.config.d_frag,
            self.config.max_frags,
            self.config.codec,
            self.n_rows,
        )
        self.fields.mapping = dict(self._mapping_before)
        self._terms = self.table.terms()
        self._term_of = None
        self._pending, self._pending_deletes = [], set()

    def set_keyword_defaults(self, keywords: Mapping[str, Any]) -> IndexConfig:
        """Record new default keyword options (``IndexConfig.keywords``; a query's own still
        win; readers opened later see them). Checked like the creator's, committed to the
        document table (the truth), then to manifest.json. Refused while writes are pending:
        the configuration row would commit them half-way."""
        self._writable()
        if self._pending_or_deletes():
            raise Conflict(f"{self.path}: commit or roll back the pending writes first")
        config = replace(self.config, keywords=dict(keywords))  # validates
        self.table.set_meta(config=config.to_json())
        self.table.commit()
        self.config = config
        self._write_manifest()
        return config

    def _write_manifest(self) -> None:
        write_manifest(
            self.path,
            self.config,
            {"generation": self.generation, "documents": len(self.alive), "rows": self.n_rows},
        )

    # -- reads used by the pipeline --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.alive)

    def term_ids(self, labels: Sequence[str]) -> list[int]:
        """Term ids of the labels the index has seen (unseen labels match nothing)."""
        known = self._known_terms()
        return [known[t] for t in labels if t in known]

    def _known_terms(self) -> dict[str, int]:
        """term -> id, rebuilt only after the terms changed (every query needs it: rebuilding
        it per query cost ~0.1 ms at 100K documents)."""
        known = self._term_of
        if known is None:
            known = self._term_of = {v: k for k, v in self._terms.items()}
        return known

    def keyword_rows(
        self,
        labels: Sequence[str],
        mode: str,
        minimum_should_match: int = 1,
        r_i: int | None = None,
    ) -> BitMap:
        """Rows storing the labels among their top ``r_i`` (None: every stored label)."""
        return self.keywords.rows_for(self.term_ids(labels), mode, minimum_should_match, r_i)

    def label_shares(self, labels: Sequence[str], r_i: int | None = None) -> dict[str, float]:
        """Share of the gallery (rows written) storing each label among its top ``r_i``: what
        a screen on that label alone admits. Labels the index never saw are absent."""
        known = self._known_terms()
        n = max(1, self.n_rows)
        return {w: len(self.keywords.term_rows(known[w], r_i)) / n for w in labels if w in known}

    def filter_rows(self, f: Filter, snap: Snapshot | None = None) -> BitMap:
        return self.fields.evaluate(f, (snap or self._snap).n_rows)

    def knn(
        self,
        q: np.ndarray,
        k: int,
        ef: int,
        allowed: BitMap | None,
        exact_threshold: int | None = None,
        snap: Snapshot | None = None,
        method: str | None = None,
        labels: Sequence[int] | None = None,
    ) -> KnnResult:
        """Filtered kNN; ``labels``: the term ids of the keyword screen ``allowed`` lies in."""
        n = (snap or self._snap).n_rows
        return self.fast.search(q, k, ef, allowed, exact_threshold, method, n, labels)

    def fast_scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return (self.fast.vectors_at(rows) @ q).astype(np.float32)  # (C,)

    def labels_of(self, rows: np.ndarray) -> list[list[str]]:
        terms, out = self._terms, []
        for row, r in zip(np.asarray(rows).tolist(), self.keywords.labels_at(rows)):
            try:
                out.append([terms[int(t)] for t in r if t >= 0])
            except KeyError as e:
                raise CorruptIndex(
                    f"{self.path / KeywordPostings.FILE}: row {row} holds term id {e}, which "
                    "the document table does not know"
                ) from None
        return out

    def docs_at(self, rows: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        return self.table.docs_at(rows)

    @property
    def scorer(self) -> MaxSimScorer:
        if self._scorer is None:
            # the scorer imports torch (~1.4 s): built on the first rerank, so opening an
            # index (isr index stats) stays fast; the one deferred isr import below the app
            from isr.plugin.store.maxsim import MaxSimScorer  # noqa: PLC0415

            self._scorer = MaxSimScorer(self._device)
        return self._scorer

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Rows of the ids live in this snapshot (a writer: its own latest state)."""
        if not self.readonly:
            return self.table.live_rows(ids)
        snap = self._snap
        found = self.table.rows_by_id(list(ids), snap.n_rows)
        out = {}
        for d, rows in found.items():
            live = [r for r in rows if r in snap.alive]
            if live:
                out[d] = live[-1]
        return out

    # -- the SearchBackend face (isr.plugin.backend) -----------------------------------------
    def candidates(self, query: Encoded, labels: tuple[str, ...], opt: SearchOptions) -> Candidates:
        """User filter -> keyword screen (relaxed when it admits < size) -> filtered kNN."""
        timer = StageTimer()

        snap = self._snap  # one generation for the whole screen
        pool = snap.alive
        if opt.filter_tree is not None:
            pool = pool & self.filter_rows(opt.filter_tree, snap)
            timer.done("filter", len(pool))
        relaxed, reason = False, ""
        admitted = pool
        screen: list[int] | None = None  # term ids whose rows hold every admitted row
        if opt.use_keywords:
            if labels:
                kw = opt.keywords
                screen = self.term_ids(labels)
                admitted = (
                    self.keywords.rows_for(screen, kw.mode, kw.minimum_should_match, kw.r_i) & pool
                )
            reason = relax_reason(labels, len(admitted), opt.size)
            if reason:
                relaxed, admitted, screen = True, pool, None
            timer.done("keywords", len(admitted), reason)
        everything = len(admitted) == snap.n_rows  # no filter and no tombstones
        total, gallery = len(admitted), len(snap.alive)
        if not opt.use_knn:
            # keys None (every row) would stream the fragment store past this snapshot once
            # a refresh grew it: then the snapshot's rows are named
            everything = everything and len(self.fragments) == snap.n_rows
            keys = None if everything else np.asarray(admitted.to_array(), dtype=np.int64)
            return Candidates(keys, None, total, gallery, tuple(timer.stages), relaxed, reason)
        res = self.knn(
            query.fast[0],
            opt.k,
            opt.num_candidates,
            None if everything else admitted,
            opt.exact_threshold,
            snap,
            opt.knn_method,
            screen,
        )
        timer.done("knn", int(res.rows.shape[0]), res.method)
        return Candidates(
            res.rows, res.scores, total, gallery, tuple(timer.stages), relaxed, reason
        )

    def score_keys(self, q: np.ndarray, q_mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
        return self.scorer.score_rows(q, q_mask, self.fragments, keys)

    def exhaustive(
        self, q: np.ndarray, q_mask: np.ndarray, k: int, keys: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.scorer.exhaustive(q, q_mask, self.fragments, k, keys)

    def fetch(self, cands: Candidates, keys: np.ndarray, with_source: bool) -> list[FetchedDoc]:
        docs = self.docs_at(keys.tolist())
        out = []
        for row, own in zip(keys.tolist(), self.labels_of(keys)):
            doc_id, src = docs[row]
            source = json.loads(src) if (src is not None and with_source) else None
            out.append(FetchedDoc(doc_id, source, tuple(own)))
        return out

    def fast_scores_of(self, q_fast: np.ndarray, cands: Candidates, keys: np.ndarray) -> np.ndarray:
        return self.fast_scores(q_fast, keys)

    # -- stats ---------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        snap = self._snap
        files = {**self.fast.nbytes(), "keywords": self.keywords.labels.nbytes()}
        files["fragments"] = self.fragments.nbytes_per_row() * snap.n_rows
        files["doctable"] = self.table.nbytes()
        total = sum(files.values())
        live = len(snap.alive)
        return {
            "path": str(self.path),
            "config": self.config.to_json(),
            "documents": live,
            "deleted": snap.n_rows - live,
            "rows": snap.n_rows,
            "generation": snap.generation,
            "keywords": len(self._terms),
            "fields": dict(self.fields.mapping),
            "bytes": files,
            "bytes_total": total,
            "bytes_per_document": round(total / live, 1) if live else None,
        }
