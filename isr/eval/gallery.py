"""A precomp split encoded once by a bundle, and the gallery indexes built from it.

Entry points: :func:`encode_split` (both sides of a split: images and captions, each the
other direction's gallery) and :func:`open_gallery_index` (open an index after checking it
holds this split encoded by this bundle, or build it when absent).

Ids are those of isr.ingest's sources, so an index loaded with
``python ingest/load_gallery.py precomp DIR --split S`` (image i: ``"i"``) or
``captions DIR/S_caps.txt --per-image c`` (caption k of image i: ``"i#k"``) is read exactly like
one built here. The build writes the already encoded items with ``EmbeddedIndex.add`` instead
of going through the loader, which would encode the gallery a second time; the sweep over R_I
builds several indexes from one encoding.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from isr.encoders.bundle import Bundle
from isr.encoders.record import Encoded
from isr.errors import Conflict, NotFound
from isr.ingest.encoded_source import array_source, fill_index
from isr.ingest.precomp import PrecompSplit
from isr.plugin import MANIFEST, EmbeddedIndex, IndexConfig

__all__ = ["EncodedSplit", "caption_id", "encode_split", "image_id", "open_gallery_index"]

ADD_BATCH = 1000  # documents per add + commit when building


def image_id(i: int) -> str:
    return str(i)


def caption_id(i: int, k: int) -> str:
    return f"{i}#{k}"


@dataclass(frozen=True, eq=False)
class EncodedSplit:
    """Images and captions of one split, encoded; caption t belongs to image caption_image[t]."""

    data_dir: Path
    split: str
    image_ids: tuple[str, ...]
    caption_ids: tuple[str, ...]
    caption_image: np.ndarray  # (T,) int64
    images: Encoded
    captions: Encoded
    encode_s: dict[str, float]  # wall seconds spent encoding each side

    @property
    def caps_per_image(self) -> int:
        return len(self.caption_ids) // len(self.image_ids)


def encode_split(
    data_dir: Path, split: str, bundle: Bundle, batch_size: int = 256, progress: bool = True
) -> EncodedSplit:
    """Encode every image (region features) and every caption of a precomp split."""
    sp = PrecompSplit.open(Path(data_dir), split)
    c = sp.caps_per_image
    parts = []
    t0 = time.perf_counter()
    for _, feats in tqdm(
        sp.iter_batches(batch_size),
        total=-(-sp.n_images // batch_size),
        desc="encode images",
        disable=not progress,
    ):
        parts.append(bundle.encode_images(feats, batch_size=batch_size))
    images = Encoded.concat(parts)
    t1 = time.perf_counter()
    parts = []
    for s in tqdm(
        range(0, len(sp.captions), batch_size), desc="encode captions", disable=not progress
    ):
        parts.append(bundle.encode_texts(sp.captions[s : s + batch_size], batch_size=batch_size))
    captions = Encoded.concat(parts)
    t2 = time.perf_counter()
    return EncodedSplit(
        data_dir=Path(data_dir),
        split=split,
        image_ids=tuple(image_id(i) for i in range(sp.n_images)),
        caption_ids=tuple(caption_id(i, k) for i in range(sp.n_images) for k in range(c)),
        caption_image=np.repeat(np.arange(sp.n_images, dtype=np.int64), c),
        images=images,
        captions=captions,
        encode_s={"images": t1 - t0, "captions": t2 - t1},
    )


def open_gallery_index(
    path: Path,
    ids: Sequence[str],
    items: Encoded,
    *,
    modality: str,
    fingerprint: str,
    r_i: int,
    max_frags: int,
    codec: str = "fp16",
    require_r_i: bool = False,
    progress: bool = True,
) -> EmbeddedIndex:
    """The index at ``path``, opened read-only; built from ``ids``/``items`` when absent.

    An existing index must hold the ``modality`` gallery filled by the bundle with this
    ``fingerprint`` and every id of ``ids`` (it may hold more: distractors). Its own R_I is
    kept unless ``require_r_i``, which makes an R_I other than ``r_i`` a Conflict.
    """
    path = Path(path)
    if not (path / MANIFEST).exists():
        _build(path, ids, items, modality, fingerprint, r_i, max_frags, codec, progress)
    index = EmbeddedIndex.open(path, readonly=True)
    try:
        c = index.config
        if c.modality != modality:
            raise Conflict(f"{path}: an index of {c.modality} documents, expected {modality}")
        if c.bundle_fingerprint != fingerprint:
            have = c.bundle_fingerprint or "no recorded bundle"
            raise Conflict(
                f"{path}: filled by bundle {have[:16]}, evaluating bundle {fingerprint[:16]}; "
                "pass another index path or delete this one to rebuild it"
            )
        if require_r_i and c.r_i != r_i:
            raise Conflict(f"{path}: stores R_I = {c.r_i} keywords per document, expected {r_i}")
        found = index.rows_of(list(ids))
        missing = [d for d in ids if d not in found]
        if missing:
            raise NotFound(
                f"{path}: {len(missing)} of the split's {len(ids)} documents are missing, "
                f"e.g. {missing[:5]}"
            )
    except BaseException:
        index.close()
        raise
    return index


def _build(
    path: Path,
    ids: Sequence[str],
    items: Encoded,
    modality: str,
    fingerprint: str,
    r_i: int,
    max_frags: int,
    codec: str,
    progress: bool,
) -> None:
    config = IndexConfig(
        d_fast=items.d_fast,
        d_frag=items.d_frag,
        max_frags=max_frags,
        codec=codec,
        modality=modality,
        r_i=r_i,
        bundle_fingerprint=fingerprint,
    )
    # Built aside and renamed when complete: a build killed half-way leaves no index that a
    # later run would take for a whole one.
    tmp = path.with_name(path.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    index = EmbeddedIndex.create(tmp, config)
    try:
        describe = {"kind": "eval-gallery", "index": path.name, "n": len(ids)}
        source = array_source(ids, items, describe, modality)
        fill_index(index, source, ADD_BATCH, progress=progress)
    finally:
        index.close()
    os.replace(tmp, path)
