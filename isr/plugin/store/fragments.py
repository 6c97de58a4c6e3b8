"""The fragment store: append-only, memory-mapped, committed by the index.

Entry point: :class:`FragmentStore` (``create`` a new one, ``open`` a committed one).

One directory, three files:

- ``fragments.bin``: one fixed slot per row, ``max_frags * code_size`` bytes; a row's real
  fragments come first in their original order (compacted by the mask), the rest of the slot
  holds encoded zero vectors;
- ``counts.u8``: one uint8 per row, the number of real fragments, so a row's mask is
  ``arange(max_frags) < count``;
- ``store.json``: d, max_frags, codec and code_size, written once by ``create``. ``open`` checks
  it, because opening with a different codec would otherwise read (and truncate) the bytes with the
  wrong row size.

The store does not know which rows are committed: the index does, and passes ``n_rows`` to
``open``, which truncates anything beyond it (an uncommitted tail left by a crash). The index calls
``sync`` before its own commit point. Appends go through unbuffered append-mode file handles;
reads go through numpy memory maps (remapped lazily after appends), so a gallery larger than RAM
works. One writer at a time; reads may run in other threads while it appends.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from isr.errors import Conflict, CorruptIndex, InvalidInput, IsrError, NotFound
from isr.plugin.store.codecs import FragmentCodec, make_codec
from isr.plugin.store.durable import fsync_dir
from isr.plugin.store.rowfile import prefault

__all__ = ["MAX_FRAGS_LIMIT", "FragmentStore"]

MAX_FRAGS_LIMIT = 64
FRAGMENTS_FILE = "fragments.bin"
COUNTS_FILE = "counts.u8"
META_FILE = "store.json"


def _check_layout(d: int, max_frags: int, codec: str) -> FragmentCodec:
    c = make_codec(codec, d)  # validates codec name and d
    if (
        isinstance(max_frags, bool)
        or not isinstance(max_frags, (int, np.integer))
        or not 1 <= max_frags <= MAX_FRAGS_LIMIT
    ):
        raise InvalidInput(
            f"fragment store: max_frags must be an integer in [1, {MAX_FRAGS_LIMIT}], "
            f"got {max_frags!r}"
        )
    return c


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


class FragmentStore:
    """Rows of up to ``max_frags`` d-dim fragments, encoded by one codec, addressed by row number.

    Build with :meth:`create` or :meth:`open`, not the constructor.
    """

    def __init__(
        self, path: Path, codec: FragmentCodec, max_frags: int, n_rows: int, readonly: bool = False
    ) -> None:
        self.path = path
        self.codec = codec
        self.d = codec.d
        self.max_frags = int(max_frags)
        self.row_bytes = self.max_frags * codec.code_size
        self._n = n_rows
        self._lock = threading.Lock()
        self.readonly = readonly
        flags = os.O_RDONLY if readonly else os.O_WRONLY | os.O_APPEND
        self._frag_fd: int | None = os.open(path / FRAGMENTS_FILE, flags)
        try:
            self._count_fd: int | None = os.open(path / COUNTS_FILE, flags)
        except BaseException:
            os.close(self._frag_fd)
            raise
        # Read maps cover the first _mapped rows; remapped when a read needs more.
        self._mapped = 0
        self._frag_mm: np.ndarray = np.empty((0, self.max_frags, codec.code_size), np.uint8)
        self._count_mm: np.ndarray = np.empty((0,), np.uint8)
        self._slot = np.arange(self.max_frags)  # (max_frags,)
        self.preload = False  # prefault every map _maps() makes (rowfile.prefault)
        # CRC-32 of each file's bytes appended since the last commit (the commit records them)
        self._crc_from, self._crc_f, self._crc_c = n_rows, 0, 0

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, d: int, max_frags: int, codec: str) -> FragmentStore:
        """A new, empty store in directory ``path`` (created; must not already hold a store)."""
        c = _check_layout(d, max_frags, codec)
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name in (FRAGMENTS_FILE, COUNTS_FILE, META_FILE):
            if (path / name).exists():
                raise Conflict(f"fragment store: {path / name} already exists; open it instead")
        meta = {"d": c.d, "max_frags": int(max_frags), "codec": c.name, "code_size": c.code_size}
        for name, data in (
            (FRAGMENTS_FILE, b""),
            (COUNTS_FILE, b""),
            (META_FILE, json.dumps(meta, indent=2).encode() + b"\n"),
        ):
            with open(path / name, "xb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        fsync_dir(path)
        return cls(path, c, max_frags, 0)

    @classmethod
    def open(
        cls, path: Path, d: int, max_frags: int, codec: str, n_rows: int, readonly: bool = False
    ) -> FragmentStore:
        """Open the store at ``path`` holding ``n_rows`` committed rows.

        A writer truncates bytes beyond ``n_rows`` rows (an uncommitted tail left by a crash);
        a reader (``readonly``) leaves them, as a writer in another process may be mid-batch,
        and maps the committed rows only. Files shorter than ``n_rows`` rows raise
        :class:`CorruptIndex`.
        """
        c = _check_layout(d, max_frags, codec)
        if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
            raise InvalidInput(f"fragment store: n_rows must be an integer >= 0, got {n_rows!r}")
        n_rows = int(n_rows)
        path = Path(path)
        if not path.is_dir():
            raise NotFound(f"fragment store: no directory at {path}")
        cls._check_meta(path, c, int(max_frags))
        row_bytes = int(max_frags) * c.code_size
        for name, per_row in ((FRAGMENTS_FILE, row_bytes), (COUNTS_FILE, 1)):
            f = path / name
            if not f.is_file():
                raise CorruptIndex(f"fragment store: {f} is missing ({n_rows} committed rows)")
            size, need = f.stat().st_size, n_rows * per_row
            if size < need:
                raise CorruptIndex(
                    f"fragment store: {f} holds {size} bytes but {n_rows} committed rows need "
                    f"{need} ({per_row} bytes per row)"
                )
            if size > need and not readonly:
                with open(f, "r+b") as fh:
                    fh.truncate(need)
                    fh.flush()
                    os.fsync(fh.fileno())
        store = cls(path, c, int(max_frags), n_rows, readonly)
        counts = store._maps()[1]
        bad = (counts == 0) | (counts > store.max_frags)
        if bad.any():
            i = int(np.argmax(bad))
            store.close()
            raise CorruptIndex(
                f"fragment store: {path / COUNTS_FILE} row {i} has count {int(counts[i])}, "
                f"outside [1, {max_frags}]"
            )
        return store

    @staticmethod
    def _check_meta(path: Path, c: FragmentCodec, max_frags: int) -> None:
        f = path / META_FILE
        try:
            meta = json.loads(f.read_text())
        except FileNotFoundError:
            raise CorruptIndex(f"fragment store: {f} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CorruptIndex(f"fragment store: {f} is not valid JSON: {e}") from e
        want = {"d": c.d, "max_frags": max_frags, "codec": c.name, "code_size": c.code_size}
        if not isinstance(meta, dict):
            raise CorruptIndex(f"fragment store: {f} holds {meta!r}, not an object")
        diff = {k: (meta.get(k), v) for k, v in want.items() if meta.get(k) != v}
        if diff:
            said = ", ".join(
                f"{k}={got!r} on disk, {exp!r} asked" for k, (got, exp) in diff.items()
            )
            raise Conflict(f"fragment store: {path} was created with a different layout: {said}")

    # ---- writing -------------------------------------------------------------------------------

    def append(self, fragments: np.ndarray, mask: np.ndarray) -> None:
        """Append B rows. fragments (B, n, d) float32, mask (B, n) bool.

        n may exceed max_frags only when the extra fragments are masked out; each row needs
        between 1 and max_frags real fragments, all finite.
        """
        if self.readonly:
            raise Conflict(f"fragment store: {self.path} is opened read-only")
        x = np.asarray(fragments)  # (B, n, d)
        m = np.asarray(mask)  # (B, n)
        if x.ndim != 3:
            raise InvalidInput(f"fragments: expected shape (B, n, d), got {x.shape}")
        if x.shape[2] != self.d:
            raise InvalidInput(
                f"fragments: expected dimension d={self.d}, got d={x.shape[2]} (shape {x.shape})"
            )
        if m.shape != x.shape[:2]:
            raise InvalidInput(f"mask: expected shape {x.shape[:2]}, got {m.shape}")
        if m.dtype != np.bool_:
            raise InvalidInput(f"mask: expected dtype bool, got {m.dtype}")
        if not np.issubdtype(x.dtype, np.floating):
            raise InvalidInput(f"fragments: expected a float array, got dtype {x.dtype}")
        b, n = m.shape
        if b == 0:
            return
        cnt = m.sum(axis=1)  # (B,)
        if (cnt == 0).any():
            i = int(np.argmax(cnt == 0))
            raise InvalidInput(f"fragments: document {i} of the batch has no real fragments")
        if (cnt > self.max_frags).any():
            i = int(np.argmax(cnt > self.max_frags))
            raise InvalidInput(
                f"fragments: document {i} of the batch has {int(cnt[i])} real fragments, "
                f"more than max_frags={self.max_frags}"
            )
        # a NaN or inf makes its fragment's sum non-finite (so may an overflow: then exactly):
        # one pass, no (B, n, d) temporary
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(x.sum(axis=2)) & m  # (B, n)
        if bad.any():
            bad[bad] = ~np.isfinite(x[bad]).all(axis=1)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise InvalidInput(f"fragments: document {i} fragment {j} has NaN or inf values")

        # Real fragments first, in their original order (stable sort on "is padding"); encoders
        # usually emit them first already, and then a slice does.
        k = min(n, self.max_frags)
        packed: np.ndarray | None = None
        if n == self.max_frags and bool((cnt == n).all()) and x.dtype == np.float32:
            packed = x  # every slot real (the usual pre-encoded batch): encoded as it is
        elif (m == (np.arange(n)[None, :] < cnt[:, None])).all():
            src = x[:, :k]  # (B, k, d)
        else:
            order = np.argsort(~m, axis=1, kind="stable")[:, :k]  # (B, k)
            src = np.take_along_axis(x, order[..., None], axis=1)
        if packed is None:
            packed = np.zeros((b, self.max_frags, self.d), np.float32)  # (B, max_frags, d)
            packed[:, :k] = src
            packed[self._slot[None, :] >= cnt[:, None]] = 0.0  # padding slots: zero vectors
        codes = self.codec.encode(packed)  # (B, max_frags, code_size)
        assert codes.shape == (b, self.max_frags, self.codec.code_size)
        with self._lock:
            fd_f, fd_c = self._fds()
            c8 = cnt.astype(np.uint8)
            try:
                _write_all(fd_f, codes.reshape(-1).data)
                _write_all(fd_c, c8.data)
            except BaseException:
                self._rollback()
                raise
            self._n += b
            self._crc_f = zlib.crc32(codes.reshape(-1).data, self._crc_f)
            self._crc_c = zlib.crc32(c8.data, self._crc_c)

    def pending_ranges(self, prefix: str = "") -> list[tuple[str, int, int, int]]:
        """(file, lo byte, hi byte, crc32) of both files' bytes appended since the last commit;
        file names carry `prefix` (the store's directory inside the index)."""
        lo, hi = self._crc_from, self._n
        if hi == lo:
            return []
        rb = self.row_bytes
        return [
            (prefix + FRAGMENTS_FILE, lo * rb, hi * rb, self._crc_f),
            (prefix + COUNTS_FILE, lo, hi, self._crc_c),
        ]

    def committed(self) -> None:
        self._crc_from, self._crc_f, self._crc_c = self._n, 0, 0

    def grow(self, n_rows: int) -> None:
        """Reader: take in rows up to n_rows that a writer committed since."""
        for fd, name, per_row in zip(
            self._fds(), (FRAGMENTS_FILE, COUNTS_FILE), (self.row_bytes, 1), strict=True
        ):
            f = self.path / name
            size, need = os.fstat(fd).st_size, n_rows * per_row
            if size < need:
                raise CorruptIndex(
                    f"fragment store: {f} holds {size} bytes but {n_rows} committed rows need {need}"
                )
        with self._lock:
            self._n = max(self._n, n_rows)

    def _rollback(self) -> None:
        """Cut both files back to the rows written before a failed append."""
        fd_f, fd_c = self._fds()
        try:
            os.ftruncate(fd_f, self._n * self.row_bytes)
            os.ftruncate(fd_c, self._n)
        except OSError as e:
            # The files no longer match _n; refuse further use rather than misalign rows.
            self._close_fds()
            raise IsrError(
                f"fragment store: {self.path} could not be rolled back after a failed append "
                f"({e}); reopen it with the committed row count"
            ) from e

    def sync(self) -> None:
        """Flush both files to stable storage (the index calls this before its commit point)."""
        with self._lock:
            for fd in self._fds():
                os.fsync(fd)

    # ---- reading -------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Rows written, committed or not."""
        return self._n

    def nbytes_per_row(self) -> int:
        return self.row_bytes + 1

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows (C,) int -> decoded fragments (C, max_frags, d) float32, mask (C, max_frags)."""
        codes, cnt = self.gather_codes(rows)
        return self.codec.decode(codes), self._slot[None, :] < cnt[:, None]

    def gather_codes(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows (C,) int -> codes (C, max_frags, code_size) uint8, counts (C,) uint8."""
        frag_mm, count_mm = self._maps()
        r = self._check_rows(rows, len(count_mm))
        return frag_mm[r], count_mm[r]

    def counts(self, rows: np.ndarray) -> np.ndarray:
        """rows (C,) int -> number of real fragments of each row, (C,) int64."""
        count_mm = self._maps()[1]
        return count_mm[self._check_rows(rows, len(count_mm))].astype(np.int64)

    def iter_chunks(
        self, chunk: int, rows: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (row_ids (c,) int64, fragments (c, max_frags, d) float32, mask (c, max_frags)).

        Over every row written when iteration starts, or over ``rows`` in the given order
        (sorted rows read the file sequentially).
        """
        for r, codes, cnt in self.iter_code_chunks(chunk, rows):
            yield r, self.codec.decode(codes), self._slot[None, :] < cnt[:, None]

    def iter_code_chunks(
        self,
        chunk: int,
        rows: np.ndarray | None = None,
        span: tuple[int, int] | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield (row_ids (c,) int64, codes (c, max_frags, code_size) uint8, counts (c,) uint8).

        Like :meth:`iter_chunks` but undecoded, for scorers that decode on their own device.
        Over all rows the codes are views of a private (copy-on-write) map: no copy is made, and
        nothing written to them reaches the file. ``span`` (lo, hi), without ``rows``, limits
        the walk to rows [lo, hi), so several scorers can split one store.
        """
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise InvalidInput(f"chunk must be an integer >= 1, got {chunk!r}")
        frag_mm, count_mm = self._maps()
        n = len(count_mm)
        if rows is None:
            lo, hi = (0, n) if span is None else span
            if not 0 <= lo <= hi <= n:
                raise InvalidInput(f"span {span} is not within the store's {n} rows")
            for i in range(lo, hi, chunk):
                j = min(i + chunk, hi)
                yield np.arange(i, j, dtype=np.int64), frag_mm[i:j], count_mm[i:j]
            return
        r = self._check_rows(rows, n)
        for i in range(0, len(r), chunk):
            rc = r[i : i + chunk]
            yield rc, frag_mm[rc], count_mm[rc]

    def _check_rows(self, rows: np.ndarray, n: int) -> np.ndarray:
        r = np.asarray(rows)
        if r.ndim != 1:
            raise InvalidInput(f"rows: expected a 1-d array of row numbers, got shape {r.shape}")
        if r.size == 0:
            return r.astype(np.int64)
        if not np.issubdtype(r.dtype, np.integer):
            raise InvalidInput(f"rows: expected integer row numbers, got dtype {r.dtype}")
        r = r.astype(np.int64, copy=False)
        lo, hi = int(r.min()), int(r.max())
        if lo < 0:
            raise InvalidInput(f"rows: row numbers must be >= 0, got {lo}")
        if hi >= n:
            raise NotFound(f"rows: row {hi} does not exist; the fragment store holds {n} rows")
        return r

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        """Read maps covering every row written so far: (n, max_frags, code_size), (n,)."""
        with self._lock:
            self._fds()  # raises when closed
            if self._mapped != self._n:
                n = self._n
                if n == 0:  # mmap cannot map an empty file
                    frag_mm = np.empty((0, self.max_frags, self.codec.code_size), np.uint8)
                    count_mm = np.empty((0,), np.uint8)
                else:
                    # mode "c": a private map whose arrays are writable, so torch.from_numpy
                    # takes them without a copy or a warning; writes never reach the file.
                    shape = (n, self.max_frags, self.codec.code_size)
                    # through our own descriptors (duplicated: the map keeps its own), so a
                    # reader keeps its files when a compaction swaps the directory
                    fd_f, fd_c = self._fds()
                    if self.readonly:
                        with os.fdopen(os.dup(fd_f), "rb") as fh:
                            frag_mm = np.memmap(fh, np.uint8, "c", shape=shape)
                        with os.fdopen(os.dup(fd_c), "rb") as fh:
                            count_mm = np.memmap(fh, np.uint8, "c", shape=(n,))
                    else:
                        frag_mm = np.memmap(self.path / FRAGMENTS_FILE, np.uint8, "c", shape=shape)
                        count_mm = np.memmap(self.path / COUNTS_FILE, np.uint8, "c", shape=(n,))
                    if self.preload:
                        prefault(frag_mm)
                        prefault(count_mm)
                self._frag_mm, self._count_mm, self._mapped = frag_mm, count_mm, n
            return self._frag_mm, self._count_mm

    def map_in(self) -> None:
        """Set :attr:`preload` and map every row written so far into the process now (as
        :meth:`isr.plugin.store.rowfile.RowFile.map_in`: maps made from then on are prefaulted
        as :meth:`_maps` makes them, so only a map older than the first call is prefaulted
        here)."""
        with self._lock:
            first, self.preload = not self.preload, True
            had = self._mapped == self._n
        frag_mm, count_mm = self._maps()
        if first and had:
            prefault(frag_mm)
            prefault(count_mm)

    # ---- lifetime ------------------------------------------------------------------------------

    def _fds(self) -> tuple[int, int]:
        if self._frag_fd is None or self._count_fd is None:
            raise IsrError(f"fragment store: {self.path} is closed")
        return self._frag_fd, self._count_fd

    def _close_fds(self) -> None:
        for fd in (self._frag_fd, self._count_fd):
            if fd is not None:
                os.close(fd)
        self._frag_fd = self._count_fd = None

    def close(self) -> None:
        """Close the files; arrays already handed out stay valid. Does not sync."""
        with self._lock:
            self._close_fds()
            # Drop our references; numpy unmaps when the last view is gone.
            self._frag_mm = np.empty((0, self.max_frags, self.codec.code_size), np.uint8)
            self._count_mm = np.empty((0,), np.uint8)
            self._mapped = 0

    def __enter__(self) -> FragmentStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"FragmentStore({str(self.path)!r}, rows={self._n}, d={self.d}, "
            f"max_frags={self.max_frags}, codec={self.codec.name!r})"
        )
