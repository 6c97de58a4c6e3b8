"""The single-writer lock of an index or sidecar directory. Entry point: :class:`WriteLock`.

An exclusive, non-blocking flock on `write.lock`: a second writer gets a Conflict at once
rather than waiting; the kernel drops the lock when the process dies, so a crash never leaves
a stale lock behind.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from isr.errors import Conflict

__all__ = ["WriteLock"]


class WriteLock:
    FILE = "write.lock"

    def __init__(self, path: Path, what: str = "index") -> None:
        self._fh = open(path / self.FILE, "ab")  # noqa: SIM115 (held until release())
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise Conflict(f"{path}: another process holds the {what}'s write lock") from None

    def release(self) -> None:
        if not self._fh.closed:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
