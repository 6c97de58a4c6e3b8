"""Reader of the SCAN "precomp" layout: region features and captions of one split.

Entry point: :meth:`PrecompSplit.open`, then :meth:`PrecompSplit.iter_batches` to stream the
image features and :meth:`PrecompSplit.captions_of` for an image's captions.

The layout (SCAN, VSE++ and most image-text matching code since) is one folder holding, per split:

- ``{split}_ims.npy``: (N, m, D) float features, m regions of D dims per image;
- ``{split}_caps.txt``: one caption per line, five consecutive lines per image (image i owns lines
  5i..5i+4), or one line per image. Some published sets end without a final newline.

Where a split has as many captions as feature rows, SCAN's own sets repeat each image's row once
per caption; this reader reports ``caps_per_image == 1`` and leaves that reading to the caller.
:func:`read_captions` reads a captions file alone, for the sets that come without features.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isr.errors import InvalidInput, NotFound

__all__ = ["PrecompSplit", "group_captions", "npy_shape", "read_captions"]

_SPLIT = re.compile(r"[A-Za-z0-9_.\-]+")


def read_captions(path: Path) -> list[str]:
    """One caption per line; a final newline (or its absence) adds no caption."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"captions file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InvalidInput(f"{path}: line {line} is not UTF-8 ({e.reason})") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last caption; it does not start a new one
    return [ln.rstrip("\r") for ln in lines]


def group_captions(captions: list[str], per_image: int = 5) -> list[list[str]]:
    """Captions grouped per image: image i owns captions per_image*i .. per_image*i+per_image-1."""
    if per_image < 1:
        raise InvalidInput(f"per_image: expected an integer >= 1, got {per_image}")
    if len(captions) % per_image:
        raise InvalidInput(
            f"{len(captions)} captions do not split into groups of {per_image} per image"
        )
    return [captions[i : i + per_image] for i in range(0, len(captions), per_image)]


def npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, checking that the file holds all the data it declares."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"features file not found: {path}")
    size = path.stat().st_size
    with path.open("rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise InvalidInput(f"{path}: not a .npy file or a damaged header ({e})") from e
        offset = f.tell()
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < need:
        raise InvalidInput(
            f"{path}: truncated .npy: its header declares {dtype} {shape} ({need:,} bytes with "
            f"the header) but the file holds {size:,} bytes"
        )
    if fortran:
        raise InvalidInput(f"{path}: Fortran-ordered array; rewrite it in C order (np.save)")
    return tuple(shape), dtype


@dataclass(frozen=True, eq=False)
class PrecompSplit:
    """One split: memory-mapped features (N, m, D) and its captions."""

    data_dir: Path
    split: str
    images: np.ndarray  # (N, m, D) read-only memmap
    captions: list[str]
    caps_per_image: int

    @classmethod
    def open(cls, data_dir: Path, split: str) -> PrecompSplit:
        data_dir = Path(data_dir)
        if not isinstance(split, str) or not _SPLIT.fullmatch(split):
            raise InvalidInput(f"split: expected a name like 'train', 'dev', 'test', got {split!r}")
        if not data_dir.is_dir():
            raise NotFound(f"precomp folder not found: {data_dir}")
        ims_path = data_dir / f"{split}_ims.npy"
        shape, dtype = npy_shape(ims_path)
        if len(shape) != 3 or min(shape[1:], default=0) < 1:
            raise InvalidInput(f"{ims_path}: expected features of shape (N, m, D), got {shape}")
        if dtype.kind != "f":
            raise InvalidInput(f"{ims_path}: expected float features, got dtype {dtype}")
        images = np.load(ims_path, mmap_mode="r", allow_pickle=False)
        caps = read_captions(data_dir / f"{split}_caps.txt")
        n = shape[0]
        if len(caps) == 5 * n:
            per = 5
        elif len(caps) == n:
            per = 1
        else:
            raise InvalidInput(
                f"{data_dir}: split {split!r} has {n} images in {ims_path.name} but {len(caps)} "
                f"captions in {split}_caps.txt; expected {5 * n} (5 per image) or {n} (1 per image)"
            )
        return cls(data_dir, split, images, caps, per)

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def m(self) -> int:
        return int(self.images.shape[1])

    @property
    def dim(self) -> int:
        return int(self.images.shape[2])

    def captions_of(self, i: int) -> list[str]:
        if not 0 <= i < self.n_images:
            raise InvalidInput(f"image index {i} out of range [0, {self.n_images})")
        k = self.caps_per_image
        return self.captions[k * i : k * i + k]

    def iter_batches(self, batch_size: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index of the first image, feats (b, m, D) float32 in memory) from image start."""
        if batch_size < 1:
            raise InvalidInput(f"batch_size: expected an integer >= 1, got {batch_size}")
        if not 0 <= start <= self.n_images:
            raise InvalidInput(f"start: expected 0 <= start <= {self.n_images}, got {start}")
        for s in range(start, self.n_images, batch_size):
            e = min(s + batch_size, self.n_images)
            yield s, np.array(self.images[s:e], dtype=np.float32)  # (b, m, D), a copy
