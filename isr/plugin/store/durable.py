"""Durable file steps shared by every on-disk structure: a directory's entries made durable
(:func:`fsync_dir`, after a rename or a new file) and a whole file replaced atomically
(:func:`atomic_write_bytes`: temp file, fsync, rename, fsync of the directory), so a crash
leaves either the old or the new content, never a mix and never a missing name."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["atomic_write_bytes", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (renames, new or removed names) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that a crash leaves either the old or the new content, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
