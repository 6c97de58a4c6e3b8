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
`n_rows`, `generation`) in one sqlite transaction. Opening reconciles every file with the
committed `n_rows`: a tail past it (a batch killed before its commit) is cut off, derived
structures are rebuilt or caught up. So a crash loses at most the uncommitted batch.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pyroaring import BitMap

from isr.encoders.record import Encoded
from isr.errors import Conflict, CorruptIndex, InvalidInput, NotFound
from isr.plugin.backend import Candidates, FetchedDoc, Stage, relax_reason
from isr.plugin.config import MANIFEST, IndexConfig, read_manifest, write_manifest
from isr.plugin.embedded.fast_index import FastIndex, KnnResult
from isr.plugin.embedded.fields import FieldIndex
from isr.plugin.embedded.postings import KeywordPostings
from isr.plugin.filters import Filter
from isr.plugin.store.doctable import DocTable, check_app_meta
from isr.plugin.store.fragments import FragmentStore
from isr.plugin.store.writelock import WriteLock

if TYPE_CHECKING:
    from isr.plugin.pipeline import SearchOptions
    from isr.plugin.store.maxsim import MaxSimScorer

__all__ = ["EmbeddedIndex"]

MAX_ID_LENGTH = 512
SNAPSHOT_EVERY = 50_000  # rows added since the last HNSW snapshot that trigger a new one


def _check_ids(ids: Sequence[str], n: int) -> list[str]:
    if isinstance(ids, str):
        raise InvalidInput("ids: expected a sequence of strings, got one string")
    ids = list(ids)
    if len(ids) != n:
        raise InvalidInput(f"ids: {len(ids)} ids for {n} items")
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if not isinstance(doc_id, str) or not doc_id:
            raise InvalidInput(f"ids[{i}]: document ids are non-empty strings, got {doc_id!r}")
        if len(doc_id) > MAX_ID_LENGTH:
            raise InvalidInput(f"ids[{i}]: id longer than {MAX_ID_LENGTH} characters")
        if doc_id in seen:
            raise InvalidInput(f"ids[{i}]: duplicate id {doc_id!r} within the batch")
        seen.add(doc_id)
    return ids


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


class EmbeddedIndex:
    """An isr index in one directory. One writer at a time; any number of read-only openers."""

    FRAGMENTS = "fragments"

    def __init__(self, path: Path, config: IndexConfig, readonly: bool, device: str | None):
        self.path = path
        self.config = config
        self.readonly = readonly
        self._lock = None if readonly else WriteLock(path, "index")
        self.table = DocTable(path, readonly=readonly)
        meta = self.table.meta()
        if "n_rows" not in meta:
            raise CorruptIndex(f"{path}: document table has no committed state")
        self.n_rows: int = int(meta["n_rows"])
        self.generation: int = int(meta["generation"])
        self._app_meta = self.table.app_meta()
        c = config
        self.fast = FastIndex(path, c, self.n_rows, readonly)
        self.keywords = KeywordPostings(path, c.r_i, self.n_rows, readonly)
        self.fragments = FragmentStore.open(
            path / self.FRAGMENTS, c.d_frag, c.max_frags, c.codec, self.n_rows, readonly
        )
        self.fields = FieldIndex(meta.get("mapping", {}), config.stored_fields)
        for row, text in self.table.iter_sources():
            if row < self.n_rows:
                self.fields.add([row], [json.loads(text)])
        self.fields._grow(self.n_rows)
        self.alive = BitMap(range(self.n_rows)) - BitMap(self.table.deleted_rows())
        self._device = device
        self._scorer: MaxSimScorer | None = None  # built on the first rerank: torch loads then
        self._terms = self.table.terms()  # tid -> term
        self._pending: list[tuple[int, Mapping[str, Any] | None]] = []
        self._pending_deletes: set[int] = set()
        self._mapping_before = dict(self.fields.mapping)

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: str | Path, config: IndexConfig, device: str | None = None
    ) -> EmbeddedIndex:
        path = Path(path)
        if path.exists():
            raise Conflict(f"{path} already exists; open it, or delete it first")
        tmp = path.with_name(path.name + ".creating")
        if tmp.exists():
            shutil.rmtree(tmp)  # a create that was killed half-way
        tmp.mkdir(parents=True)
        table = DocTable(tmp)
        table.set_meta(n_rows=0, generation=0, mapping={})
        table.commit()
        table.close()
        FragmentStore.create(
            tmp / cls.FRAGMENTS, config.d_frag, config.max_frags, config.codec
        ).close()
        write_manifest(tmp, config, {"generation": 0, "documents": 0, "rows": 0})
        os.replace(tmp, path)
        return cls(path, config, readonly=False, device=device)

    @classmethod
    def open(
        cls,
        path: str | Path,
        readonly: bool = False,
        expect: IndexConfig | None = None,
        device: str | None = None,
    ) -> EmbeddedIndex:
        path = Path(path)
        config, _ = read_manifest(path)
        if expect is not None:
            config.check_compatible(expect)
        index = cls(path, config, readonly=readonly, device=device)
        if not readonly:
            index._write_manifest()
        return index

    @staticmethod
    def destroy(path: str | Path) -> None:
        """Delete an index directory (refuses a directory that is not an isr index)."""
        path = Path(path)
        if not (path / MANIFEST).exists():
            raise NotFound(f"no isr index at {path}")
        shutil.rmtree(path)

    def close(self) -> None:
        if not self.readonly and self._pending_or_deletes():
            self.rollback()
        try:
            self.fast.wait()  # a failed background insertion: no snapshot, files still closed
            if not self.readonly and self.fast.snapshot_rows != self.fast.hnsw.ntotal:
                self.fast.snapshot()
        finally:
            self.table.close()
            self.fast.close()
            self.keywords.close()
            self.fragments.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

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
        self.table.tombstone(rows)
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
        ids = _check_ids(ids, n)
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
            for i, kw in enumerate(items.keywords):
                top = kw.top(c.r_i)
                term_ids[i, : len(top)] = [tids[t] for t in top]
            start = len(self.fast.vectors)
            rows = list(range(start, start + n))
            if existing:
                self.table.tombstone(list(existing.values()))
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
        return bool(self._pending or self._pending_deletes or self.table._in_tx)

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
        self.fast.vectors.sync()
        self.keywords.labels.sync()
        self.fragments.sync()
        self.table.set_meta(
            n_rows=n_rows,
            generation=self.generation + 1,
            mapping=self.fields.mapping,
            app=app,
        )
        self.table.commit()  # the commit point
        self.generation += 1
        self._app_meta.update(app)
        self.n_rows = n_rows
        self.fast.publish(n_rows, wait=wait_for_graph)
        self.keywords.publish(n_rows)
        rows = [r for r, _ in self._pending]
        self.fields.add(rows, [s for _, s in self._pending])
        self.fields._grow(n_rows)
        self.alive.update(rows)
        self.alive.difference_update(BitMap(self._pending_deletes))
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
        self.table.rollback()
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
        self._pending, self._pending_deletes = [], set()

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
        known = {v: k for k, v in self._terms.items()}
        return [known[t] for t in labels if t in known]

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
        known = {v: k for k, v in self._terms.items()}
        n = max(1, self.n_rows)
        return {w: len(self.keywords.term_rows(known[w], r_i)) / n for w in labels if w in known}

    def filter_rows(self, f: Filter) -> BitMap:
        return self.fields.evaluate(f, self.n_rows)

    def knn(
        self, q: np.ndarray, k: int, ef: int, allowed: BitMap | None, exact_threshold: int
    ) -> KnnResult:
        return self.fast.search(q, k, ef, allowed, exact_threshold)

    def fast_scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return (self.fast.vectors_at(rows) @ q).astype(np.float32)  # (C,)

    def labels_of(self, rows: np.ndarray) -> list[list[str]]:
        return [[self._terms[int(t)] for t in r if t >= 0] for r in self.keywords.labels_at(rows)]

    def docs_at(self, rows: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        return self.table.docs_at(rows)

    @property
    def scorer(self) -> MaxSimScorer:
        if self._scorer is None:
            from isr.plugin.store.maxsim import MaxSimScorer

            self._scorer = MaxSimScorer(self._device)
        return self._scorer

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        return self.table.live_rows(ids)

    # -- the SearchBackend face (isr.plugin.backend) -----------------------------------------
    def candidates(self, query: Encoded, labels: tuple[str, ...], opt: SearchOptions) -> Candidates:
        """User filter -> keyword screen (relaxed when it admits < size) -> filtered kNN."""
        stages: list[Stage] = []
        t = time.perf_counter()

        def done(name: str, t0: float, count: int, detail: str = "") -> float:
            now = time.perf_counter()
            stages.append(Stage(name, (now - t0) * 1e3, count, detail))
            return now

        pool = self.alive
        if opt.filter_tree is not None:
            pool = pool & self.filter_rows(opt.filter_tree)
            t = done("filter", t, len(pool))
        relaxed, reason = False, ""
        admitted = pool
        if opt.use_keywords:
            if not labels:
                relaxed, reason = True, "the query has no keywords"
            else:
                kw = opt.keywords
                admitted = (
                    self.keyword_rows(labels, kw.mode, kw.minimum_should_match, kw.r_i) & pool
                )
                reason = relax_reason(len(admitted), opt.size)
                if reason:
                    relaxed, admitted = True, pool
            t = done("keywords", t, len(admitted), reason)
        everything = len(admitted) == self.n_rows  # no filter and no tombstones
        total, gallery = len(admitted), len(self.alive)
        if not opt.use_knn:
            keys = None if everything else np.asarray(admitted.to_array(), dtype=np.int64)
            return Candidates(keys, None, total, gallery, tuple(stages), relaxed, reason)
        res = self.knn(
            query.fast[0],
            opt.k,
            opt.num_candidates,
            None if everything else admitted,
            opt.exact_threshold,
        )
        done("knn", t, int(res.rows.shape[0]), res.method)
        return Candidates(res.rows, res.scores, total, gallery, tuple(stages), relaxed, reason)

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
        files = {**self.fast.nbytes(), "keywords": self.keywords.labels.nbytes()}
        files["fragments"] = self.fragments.nbytes_per_row() * self.n_rows
        files["doctable"] = self.table.nbytes()
        total = sum(files.values())
        live = len(self.alive)
        return {
            "path": str(self.path),
            "config": self.config.to_json(),
            "documents": live,
            "deleted": self.n_rows - live,
            "rows": self.n_rows,
            "generation": self.generation,
            "keywords": len(self._terms),
            "fields": dict(self.fields.mapping),
            "bytes": files,
            "bytes_total": total,
            "bytes_per_document": round(total / live, 1) if live else None,
        }
