"""Append-only files of fixed-size rows, read through a memory map.

Entry point: :class:`RowFile`. The index appends a batch, fsyncs it, then commits the new
row count in its document table; on open the writer truncates anything past the committed
count (the tail of a batch that never committed), and readers never look past it.
Appends keep a running CRC-32 of the bytes written since the last commit, which the commit
records as that range's checksum (:mod:`isr.plugin.store.segment`); float rows must be
finite (a NaN in a vector file would poison every score it enters).

:func:`prefault` maps every page of a memory map into the process at once (a reader's
``preload``): the first touch of each page otherwise costs a page fault inside the query that
touches it, ~30-50 us each on the project's VM, which at 1M documents was most of the
rerank's gather (BENCHMARKS.md, issue 16, session 3).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import zlib
from pathlib import Path

import numpy as np

from isr.errors import CorruptIndex, InvalidInput

__all__ = ["RowFile", "prefault"]

# Linux >= 5.14 (the constant is missing from Python's mmap module before 3.13)
MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform == "linux" else None)


def prefault(view: np.ndarray) -> bool:
    """Map every page of a memory-mapped array into this process now, reading the file where
    the page cache lacks it (MADV_POPULATE_READ), so no later read of it faults. Returns
    whether it did; elsewhere (another OS, an older kernel, an array that is no map) it only
    asks the kernel to read ahead (MADV_WILLNEED), or does nothing."""
    m = getattr(view, "_mmap", None)  # np.memmap's own mmap object
    if not isinstance(m, mmap.mmap):
        return False
    try:
        if MADV_POPULATE_READ is not None:
            m.madvise(MADV_POPULATE_READ)
            return True
    except OSError:  # EINVAL before Linux 5.14
        pass
    with contextlib.suppress(AttributeError, OSError):  # no madvise here: nothing to do
        m.madvise(mmap.MADV_WILLNEED)
    return False


class RowFile:
    """A file of rows of `shape` and `dtype`, grown by `append`, read by `view`."""

    def __init__(
        self,
        path: Path,
        dtype: np.dtype | type,
        shape: tuple[int, ...],
        n_rows: int,
        readonly: bool = False,
    ) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self.row_bytes = int(self.dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        self.readonly = readonly
        if not path.exists():
            if readonly or n_rows:
                raise CorruptIndex(f"{path}: missing, expected {n_rows} committed rows")
            path.touch()
        size = path.stat().st_size
        if size < n_rows * self.row_bytes:
            raise CorruptIndex(
                f"{path}: {size} bytes, but {n_rows} committed rows need {n_rows * self.row_bytes}"
            )
        if not readonly and size > n_rows * self.row_bytes:
            # the tail of a batch that was never committed
            os.truncate(path, n_rows * self.row_bytes)
        self.n_rows = n_rows
        self._fh = None if readonly else open(path, "ab")  # noqa: SIM115 (held until close())
        # a reader maps through its own handle: a compaction that swaps the directory
        # leaves it reading the files of its snapshot
        self._rfh = open(path, "rb") if readonly else None  # noqa: SIM115 (held until close())
        self._view: np.ndarray | None = None
        self._crc_from, self._crc = n_rows, 0  # the uncommitted range and its running CRC
        self.preload = False  # prefault every map view() makes (see prefault)

    def __len__(self) -> int:
        return self.n_rows

    def append(self, x: np.ndarray) -> None:
        if self._fh is None:
            raise InvalidInput(f"{self.path}: opened read-only")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if x.shape[1:] != self.shape:
            raise InvalidInput(f"{self.path.name}: rows of shape {self.shape}, got {x.shape[1:]}")
        if self.dtype.kind == "f" and not np.isfinite(x).all():
            i = int(np.argmax(~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)))
            raise InvalidInput(f"{self.path.name}: row {i} of the batch has NaN or inf values")
        data = x.tobytes()
        self._fh.write(data)
        self._crc = zlib.crc32(data, self._crc)
        self.n_rows += x.shape[0]
        self._view = None

    def pending_range(self) -> tuple[str, int, int, int] | None:
        """(file name, lo byte, hi byte, crc32) of the rows appended since the last commit."""
        if self.n_rows == self._crc_from:
            return None
        lo, hi = self._crc_from * self.row_bytes, self.n_rows * self.row_bytes
        return (self.path.name, lo, hi, self._crc)

    def committed(self) -> None:
        """The pending range is now part of a commit: start the next one."""
        self._crc_from, self._crc = self.n_rows, 0

    def grow(self, n_rows: int) -> None:
        """Reader: take in rows up to n_rows that a writer committed since."""
        need = n_rows * self.row_bytes
        size = os.fstat(self._rfh.fileno()).st_size if self._rfh else self.path.stat().st_size
        if size < need:
            raise CorruptIndex(
                f"{self.path}: {size} bytes, but {n_rows} committed rows need {need}"
            )
        self.n_rows = n_rows

    def sync(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def truncate(self, n_rows: int) -> None:
        """Drop rows past n_rows (undo uncommitted appends)."""
        if self._fh is None:
            raise InvalidInput(f"{self.path}: opened read-only")
        self._fh.flush()
        os.truncate(self.path, n_rows * self.row_bytes)
        self.n_rows = n_rows
        self._view = None
        self._crc_from, self._crc = n_rows, 0

    def view(self) -> np.ndarray:
        """(n_rows, *shape) read-only memory map of the rows written so far."""
        view, n = self._view, self.n_rows
        if view is None or view.shape[0] != n:
            if self._fh is not None:
                self._fh.flush()
            if n == 0:
                view = np.empty((0, *self.shape), dtype=self.dtype)
            else:
                src = self._rfh if self._rfh is not None else self.path
                view = np.memmap(src, dtype=self.dtype, mode="r", shape=(n, *self.shape))
                if self.preload:
                    prefault(view)
            self._view = view  # one assignment: a search in another thread keeps its own
        return view

    def map_in(self) -> None:
        """Set :attr:`preload` and map every row written so far into the process now. Once
        set, every new map is prefaulted as view() makes it; only a map made before the first
        call needs prefaulting here (a later call only makes the map a refresh left stale)."""
        first, self.preload = not self.preload, True
        had = self._view is not None and self._view.shape[0] == self.n_rows
        view = self.view()
        if first and had:
            prefault(view)

    def nbytes(self) -> int:
        return self.n_rows * self.row_bytes

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._rfh is not None:
            self._rfh.close()
            self._rfh = None
        self._view = None
