"""The document table: external id <-> internal row, `_source`, tombstones, committed state.

Entry point: :class:`DocTable`. One sqlite3 database (WAL, synchronous=FULL) per index.
Its `meta` rows (generation, n_rows, field mapping) are the index's commit point: a
sqlite COMMIT makes a batch visible, and every other file is reconciled against it on open.
Application entries (an ingest's progress) ride in the same rows under :data:`APP_META`, so
they commit atomically with the batch (:func:`check_app_meta`, :meth:`DocTable.app_meta`).

Besides the documents and terms: `dels` records in which generation each row was tombstoned
(a reader catching up reads only the tombstones it has not seen), and `ranges` the checksum
of every byte range of a row file that a commit made durable (see
:mod:`isr.plugin.store.segment`). :meth:`DocTable.read` runs reads in one sqlite read
transaction, so everything they return belongs to one committed generation.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from isr.errors import CorruptIndex, InvalidInput

__all__ = ["APP_META", "DocTable", "check_app_meta"]

APP_META = "app."  # prefix of application entries in the meta rows


def check_app_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Application entries as a commit takes them: names non-empty strings, values JSON."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidInput(f"meta: expected a mapping of names to JSON values, got {meta!r}")
    for k, v in meta.items():
        if not isinstance(k, str) or not k:
            raise InvalidInput(f"meta: entry names are non-empty strings, got {k!r}")
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"meta[{k!r}]: not serialisable as JSON ({e})") from e
    return dict(meta)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    source TEXT,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS docs_live_id ON docs(id) WHERE deleted = 0;
CREATE TABLE IF NOT EXISTS terms (tid INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dels (gen INTEGER NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY (gen, row)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ranges (file TEXT NOT NULL, lo INTEGER NOT NULL,
    hi INTEGER NOT NULL, crc INTEGER NOT NULL, PRIMARY KEY (file, lo)) WITHOUT ROWID;
"""


class DocTable:
    """sqlite-backed table of documents. Writes happen in one open transaction per batch."""

    FILE = "docs.sqlite"

    def __init__(self, path: Path, readonly: bool = False, create: bool = False) -> None:
        file = self.file = path / self.FILE
        if not create and not file.is_file():
            # a writer must not silently start an empty table next to committed row files
            raise CorruptIndex(f"{file}: the document table is missing")
        try:
            if readonly:
                uri = f"file:{file}?mode=ro"
                self.db = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self.db = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                self.db.executescript(_SCHEMA)  # also adds tables an older index lacks
            names = {n for (n,) in self.db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as e:
            raise CorruptIndex(f"{file}: unreadable document table ({e})") from e
        self.has_dels = "dels" in names and "ranges" in names  # an older index opened read-only
        self.readonly = readonly
        self._in_tx = False
        self._reading = 0
        # term -> tid of terms committed to the table; terms created in the open transaction
        # join it at commit (a rollback forgets them, so ids never outlive their rows)
        self._tids: dict[str, int] = {}
        self._tids_pending: dict[str, int] = {}
        # CRC-32 of the document rows and terms this batch inserted: sqlite checksums no
        # page, so a damaged _source or term would otherwise read back as valid text
        self._crc: dict[str, list[int]] = {}  # DOCS / TERMS -> [lo, hi, crc]

    DOCS, TERMS = "docs.sqlite#docs", "docs.sqlite#terms"

    @staticmethod
    def row_bytes(row: int, doc_id: str, source: str | None) -> bytes:
        return f"{row}\x1f{doc_id}\x1f{source if source is not None else ''}\x1e".encode()

    @staticmethod
    def term_bytes(tid: int, term: str) -> bytes:
        return f"{tid}\x1f{term}\x1e".encode()

    def _track(self, what: str, key: int, data: bytes) -> None:
        got = self._crc.get(what)
        if got is None:
            self._crc[what] = [key, key + 1, zlib.crc32(data)]
        else:
            got[1], got[2] = key + 1, zlib.crc32(data, got[2])

    def pending_ranges(self) -> list[tuple[str, int, int, int]]:
        """(what, lo key, hi key, crc32) of the rows and terms inserted in this batch."""
        return [(w, lo, hi, crc) for w, (lo, hi, crc) in self._crc.items()]

    def verify_content(self) -> list[str]:
        """Recompute the committed rows' and terms' checksums (`isr index check`)."""
        problems = []
        for what, q in (
            (self.DOCS, "SELECT row, id, source FROM docs WHERE row >= ? AND row < ? ORDER BY row"),
            (self.TERMS, "SELECT tid, term FROM terms WHERE tid >= ? AND tid < ? ORDER BY tid"),
        ):
            for lo, hi, crc in self.ranges(what):
                c = 0
                for r in self._exec(q, (lo, hi)):
                    c = zlib.crc32(
                        self.row_bytes(*r) if what == self.DOCS else self.term_bytes(*r), c
                    )
                if c != crc:
                    problems.append(f"{what}: keys [{lo}, {hi}) fail their checksum")
        return problems

    # -- committed state ---------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[None]:
        """Run the reads inside in one read transaction: one committed generation.

        sqlite's WAL gives a reader the snapshot of its transaction's first read; without
        this each statement sees the latest commit, and a commit landing between two reads
        tears the view (n_rows of one generation, tombstones of the next). A writer inside
        its own write transaction already reads a consistent state (its own).
        """
        if self._in_tx or self._reading:
            self._reading += 1
            try:
                yield
            finally:
                self._reading -= 1
            return
        self._exec("BEGIN")
        self._reading = 1
        try:
            yield
        finally:
            self._reading = 0
            self.db.execute("COMMIT")

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, args)
        except sqlite3.DatabaseError as e:
            raise CorruptIndex(f"{self.file}: document table unreadable ({e})") from e

    def meta(self) -> dict[str, Any]:
        rows = self._exec("SELECT key, value FROM meta").fetchall()
        try:
            return {k: json.loads(v) for k, v in rows}
        except ValueError as e:
            raise CorruptIndex(f"{self.file}: a meta row is not JSON ({e})") from e

    def app_meta(self) -> dict[str, Any]:
        """The committed application entries (see :func:`check_app_meta`)."""
        meta = self.meta()
        return {k.removeprefix(APP_META): v for k, v in meta.items() if k.startswith(APP_META)}

    def set_meta(self, app: Mapping[str, Any] | None = None, **values: Any) -> None:
        """Write meta rows in the open transaction; `app`: checked application entries."""
        rows = {**values, **{APP_META + k: v for k, v in (app or {}).items()}}
        self._begin()
        self.db.executemany(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            [(k, json.dumps(v)) for k, v in rows.items()],
        )

    def nbytes(self) -> int:
        """Bytes on disk, the write-ahead log included."""
        files = (self.file, self.file.with_name(self.file.name + "-wal"))
        return sum(f.stat().st_size for f in files if f.exists())

    # -- transactions --------------------------------------------------------------------
    @property
    def in_tx(self) -> bool:
        """Whether a write transaction (an uncommitted batch) is open."""
        return self._in_tx

    def _begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def commit(self) -> None:
        self._crc.clear()
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False
        self._tids.update(self._tids_pending)
        self._tids_pending.clear()

    def rollback(self) -> None:
        self._tids_pending.clear()
        self._crc.clear()
        if self._in_tx:
            self.db.execute("ROLLBACK")
            self._in_tx = False

    # -- writes --------------------------------------------------------------------------
    def insert(
        self, rows: Sequence[int], ids: Sequence[str], sources: Sequence[str | None]
    ) -> None:
        self._begin()
        rows = [int(r) for r in rows]
        self.db.executemany(
            "INSERT INTO docs(row, id, source) VALUES (?, ?, ?)", zip(rows, ids, sources)
        )
        for r, d, src in zip(rows, ids, sources):
            self._track(self.DOCS, r, self.row_bytes(r, d, src))

    def tombstone(self, rows: Sequence[int], generation: int) -> None:
        """Tombstone rows in the batch that commits as `generation` (recorded in `dels`)."""
        self._begin()
        marks = [(int(r),) for r in rows]
        self.db.executemany("UPDATE docs SET deleted = 1 WHERE row = ?", marks)
        self.db.executemany(
            "INSERT OR IGNORE INTO dels(gen, row) VALUES (?, ?)",
            [(int(generation), int(r)) for r in rows],
        )

    def add_ranges(self, ranges: Sequence[tuple[str, int, int, int]]) -> None:
        """Checksums (file, lo, hi, crc32) of byte ranges this batch made durable."""
        self._begin()
        self.db.executemany(
            "INSERT OR REPLACE INTO ranges(file, lo, hi, crc) VALUES (?, ?, ?, ?)", ranges
        )

    def ranges(self, file: str, start: int = 0) -> list[tuple[int, int, int]]:
        """(lo, hi, crc) of the committed byte ranges of `file` that end after `start`."""
        if not self.has_dels:
            return []
        q = "SELECT lo, hi, crc FROM ranges WHERE file = ? AND hi > ? ORDER BY lo"
        return [(int(a), int(b), int(c)) for a, b, c in self._exec(q, (file, start))]

    def drop_rows_from(self, n_rows: int) -> int:
        """Remove rows >= n_rows (never committed through meta); returns how many."""
        self._begin()
        cur = self.db.execute("DELETE FROM docs WHERE row >= ?", (n_rows,))
        return cur.rowcount

    def term_ids(self, terms: Sequence[str], create: bool) -> dict[str, int]:
        """Integer ids of keyword terms; with create, unseen terms get new ids."""
        out: dict[str, int] = {}
        for term in terms:
            known = self._tids.get(term, self._tids_pending.get(term))
            if known is not None:
                out[term] = known
                continue
            got = self.db.execute("SELECT tid FROM terms WHERE term = ?", (term,)).fetchone()
            if got is not None:
                out[term] = int(got[0])
                if not self.readonly:  # a reader's view may be rolled back by the writer
                    (self._tids_pending if self._in_tx else self._tids)[term] = out[term]
            elif create:
                self._begin()
                tid = self.db.execute("INSERT INTO terms(term) VALUES (?)", (term,)).lastrowid
                assert tid is not None
                out[term] = self._tids_pending[term] = int(tid)
                self._track(self.TERMS, int(tid), self.term_bytes(int(tid), term))
        return out

    def terms(self, after: int = -1) -> dict[int, str]:
        """tid -> term, of the terms with ids above `after` (all by default)."""
        q = "SELECT tid, term FROM terms WHERE tid > ?"
        return {int(t): s for t, s in self._exec(q, (after,))}

    def deleted_since(self, generation: int) -> np.ndarray:
        """Rows tombstoned by commits after `generation`."""
        q = "SELECT row FROM dels WHERE gen > ?"
        return np.array([r for (r,) in self._exec(q, (generation,))], dtype=np.int64)

    def sources_between(self, lo: int, hi: int) -> list[tuple[int, str]]:
        q = "SELECT row, source FROM docs WHERE row >= ? AND row < ? AND source IS NOT NULL"
        return [(int(r), s) for r, s in self._exec(q + " ORDER BY row", (lo, hi))]

    def integrity(self) -> list[str]:
        """sqlite's own integrity check: [] when the database file is sound."""
        got = [r for (r,) in self._exec("PRAGMA integrity_check")]
        return [] if got == ["ok"] else got

    def rows_by_id(self, ids: Sequence[str], below: int) -> dict[str, list[int]]:
        """Every row below `below` of each id (live or not), for a snapshot's own lookup."""
        out: dict[str, list[int]] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            q = f"SELECT id, row FROM docs WHERE row < ? AND id IN ({marks})"
            for d, r in self._exec(q, [below, *chunk]):
                out.setdefault(d, []).append(int(r))
        return out

    # -- reads ---------------------------------------------------------------------------
    def live_rows(self, ids: Sequence[str]) -> dict[str, int]:
        """Rows of the live documents among `ids` (absent ids are left out)."""
        out: dict[str, int] = {}
        for i in range(0, len(ids), 500):
            chunk = list(ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            q = f"SELECT id, row FROM docs WHERE deleted = 0 AND id IN ({marks})"
            out.update({d: int(r) for d, r in self._exec(q, chunk)})
        return out

    def docs_at(self, rows: Sequence[int]) -> dict[int, tuple[str, str | None]]:
        """row -> (id, source JSON or None)."""
        out: dict[int, tuple[str, str | None]] = {}
        for i in range(0, len(rows), 500):
            chunk = [int(r) for r in rows[i : i + 500]]
            marks = ",".join("?" * len(chunk))
            q = f"SELECT row, id, source FROM docs WHERE row IN ({marks})"
            out.update({int(r): (d, s) for r, d, s in self._exec(q, chunk)})
        return out

    def deleted_rows(self) -> np.ndarray:
        got = self._exec("SELECT row FROM docs WHERE deleted = 1").fetchall()
        return np.array([r for (r,) in got], dtype=np.int64)

    def iter_sources(self, batch: int = 10_000) -> Iterator[tuple[int, str]]:
        cur = self._exec("SELECT row, source FROM docs WHERE source IS NOT NULL ORDER BY row")
        while chunk := cur.fetchmany(batch):
            yield from chunk

    def iter_live_ids(self, batch: int = 10_000) -> Iterator[str]:
        cur = self._exec("SELECT id FROM docs WHERE deleted = 0 ORDER BY row")
        while chunk := cur.fetchmany(batch):
            yield from (d for (d,) in chunk)

    def count(self, deleted: bool) -> int:
        q = "SELECT COUNT(*) FROM docs WHERE deleted = ?"
        return int(self._exec(q, (int(deleted),)).fetchone()[0])

    def close(self) -> None:
        self.rollback()
        self.db.close()
