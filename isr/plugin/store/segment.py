"""The commit protocol shared by the embedded index and the sidecar: a segment directory.

Entry point: :class:`Segment`. A segment is one directory of append-only row stores (row
files, a fragment store) and a :class:`~isr.plugin.store.doctable.DocTable` whose meta rows
are the commit point. The protocol, in one place for both users:

- :func:`create_aside` builds a new directory next to its final path (`NAME.creating`),
  commits generation 0 with the configuration, and renames it into place: a create killed
  half-way leaves no half-made index under the real name.
- :meth:`Segment.commit` fsyncs the row stores, records the CRC-32 of every byte range the
  batch appended (`ranges`), and commits `n_rows`, `generation`, the configuration and the
  application entries in one sqlite transaction: that COMMIT is the commit point.
- :meth:`Segment.rollback` drops the open batch; :meth:`Segment.committed` reads the
  committed state in one read transaction (:class:`Committed`), so a reader never mixes two
  generations.
- The configuration committed in the table is the truth: :meth:`Segment.check_config`
  compares it with `manifest.json` (a mirror for people and tools) and refuses a
  disagreement with CorruptIndex naming both values, before any file is truncated.
- :func:`verify_ranges` re-reads committed ranges and compares their checksums (the new
  tail on open, everything in `isr index check`).
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from isr.errors import Conflict, CorruptIndex
from isr.plugin.config import IndexConfig, write_manifest
from isr.plugin.store.doctable import APP_META, DocTable
from isr.plugin.store.durable import fsync_dir
from isr.plugin.store.fragments import FragmentStore
from isr.plugin.store.writelock import WriteLock

__all__ = ["Committed", "Segment", "create_aside", "verify_ranges"]

Range = tuple[str, int, int, int]  # (file relative to the segment, lo byte, hi byte, crc32)


@dataclass(frozen=True)
class Committed:
    """The committed state of a segment, read in one transaction."""

    n_rows: int
    generation: int
    meta: dict[str, Any]  # every meta row: mapping, config, app.* entries

    @property
    def app(self) -> dict[str, Any]:
        m = self.meta
        return {k.removeprefix(APP_META): v for k, v in m.items() if k.startswith(APP_META)}


def create_aside(
    path: Path,
    config: IndexConfig,
    state: dict[str, Any],
    fragments: str,
    **meta: Any,
) -> None:
    """Create a segment at `path`: built in `path.creating`, then renamed into place.

    `fragments` names the segment's fragment store (made empty from `config`); `meta` are
    further committed meta rows (e.g. the field mapping); `state` is the manifest's mirror of
    the counts. An existing `path` is a Conflict: creating never replaces a segment.
    """
    if path.exists():
        raise Conflict(f"{path} already exists; open it, or delete it first")
    tmp = path.with_name(path.name + ".creating")
    if tmp.exists():
        shutil.rmtree(tmp)  # a create that was killed half-way
    tmp.mkdir(parents=True)
    table = DocTable(tmp, create=True)
    table.set_meta(n_rows=0, generation=0, config=config.to_json(), **meta)
    table.commit()
    table.close()
    FragmentStore.create(tmp / fragments, config.d_frag, config.max_frags, config.codec).close()
    write_manifest(tmp, config, state)
    fsync_dir(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def config_diff(table: IndexConfig, manifest: IndexConfig) -> list[str]:
    return [
        f"{f.name}: document table {getattr(table, f.name)!r}, "
        f"manifest.json {getattr(manifest, f.name)!r}"
        for f in fields(table)
        if getattr(table, f.name) != getattr(manifest, f.name)
    ]


class Segment:
    """The write lock and document table of one segment directory, and its commit protocol."""

    def __init__(self, path: Path, readonly: bool, what: str = "index") -> None:
        self.path = path
        self.readonly = readonly
        self._lock = None if readonly else WriteLock(path, what)
        try:
            self.table = DocTable(path, readonly=readonly)
        except BaseException:
            self.release()
            raise

    # -- committed state -----------------------------------------------------------------
    def committed(self) -> Committed:
        with self.table.read():
            meta = self.table.meta()
        if "n_rows" not in meta or "generation" not in meta:
            raise CorruptIndex(f"{self.table.file}: the document table has no committed state")
        return Committed(int(meta["n_rows"]), int(meta["generation"]), meta)

    def adopt_config(self, manifest: IndexConfig) -> None:
        """An index made before the configuration was committed has only manifest.json's: a
        writer commits it, before it opens its read transaction (sqlite cannot begin the
        write inside one: opening such an index to write failed with "cannot start a
        transaction within a transaction"). A reader takes the manifest's as it is."""
        if self.readonly:
            return
        meta = self.table.meta()
        if "config" not in meta and "n_rows" in meta:
            self.table.set_meta(config=manifest.to_json())
            self.table.commit()

    def check_config(self, c: Committed, manifest: IndexConfig) -> IndexConfig:
        """The committed configuration, checked against manifest.json's copy (an index made
        before it was committed: the manifest's, see :meth:`adopt_config`)."""
        stored = c.meta.get("config")
        if stored is None:
            return manifest
        try:
            table = IndexConfig.from_json(stored)
        except (TypeError, ValueError) as e:
            raise CorruptIndex(
                f"{self.table.file}: committed configuration unreadable ({e})"
            ) from e
        # The keyword defaults are a hint a writer may change (EmbeddedIndex.
        # set_keyword_defaults: the table first, then the manifest): a crash between the two
        # leaves the manifest one step behind, and the table's copy is taken.
        diff = [d for d in config_diff(table, manifest) if not d.startswith("keywords:")]
        if diff:
            raise CorruptIndex(
                f"{self.path}: manifest.json disagrees with the committed configuration "
                f"(the document table is the truth; nothing was changed): " + "; ".join(diff)
            )
        return table

    # -- the commit protocol -------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return self.table.in_tx

    def commit(
        self,
        sync: Sequence[Callable[[], None]],
        ranges: Sequence[Range],
        n_rows: int,
        generation: int,
        app: Mapping[str, Any] | None = None,
        **meta: Any,
    ) -> None:
        """fsync the stores, then commit ranges + counts + meta in one transaction."""
        for f in sync:
            f()
        ranges = [*ranges, *self.table.pending_ranges()]
        if ranges:
            self.table.add_ranges(ranges)
        self.table.set_meta(n_rows=n_rows, generation=generation, app=app, **meta)
        self.table.commit()  # the commit point

    def rollback(self) -> None:
        self.table.rollback()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        try:
            self.table.close()
        finally:
            self.release()


def verify_ranges(root: Path, table: DocTable, file: str, start: int, end: int) -> list[str]:
    """Check the committed checksums of `file` (relative to root) over bytes [start, end).

    Returns the problems found (empty when sound); bytes no range covers (an index from
    before checksums) are not a problem.
    """
    problems = []
    path = root / file
    with open(path, "rb") as fh:
        for lo, hi, crc in table.ranges(file, start):
            if hi > end:
                continue  # committed after the state being checked
            if lo < start:
                continue
            fh.seek(lo)
            data = fh.read(hi - lo)
            if len(data) != hi - lo:
                problems.append(f"{file}: bytes [{lo}, {hi}) cut short ({len(data)} read)")
            elif zlib.crc32(data) != crc:
                problems.append(f"{file}: bytes [{lo}, {hi}) fail their checksum")
    return problems


def check_ranges(root: Path, table: DocTable, file: str, start: int, end: int) -> None:
    """verify_ranges, raising CorruptIndex naming the file and range of the first problem."""
    problems = verify_ranges(root, table, file, start, end)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CorruptIndex(f"{root}: {problems[0]}{more}")
