"""Region features of a folder of captioned photos, extracted once into the SCAN precomp layout
(what ``isr train`` reads), with the record of the eyes that saw them.

Entry point: :func:`extract_precomp` (``isr train --images DIR --captions FILE --backbone
DIR``). The captions file is a CSV / JSONL keyed like ``--fields`` (id, path or file_name;
:mod:`isr.ingest.fields`) with a ``caption`` (one string) or ``captions`` (a list) column;
photos without a caption are left out (counted). A seeded tenth of the photos (at most
``dev_max``) becomes the ``dev`` split for the per-epoch validation recall.

Output, in ``out_dir``: ``{train,dev}_ims.npy`` (N, k, D) float32 k-means regions,
``{train,dev}_caps.txt`` (five lines per image: an image's captions repeated in turn when it
has fewer), ``{split}_images.txt`` (the relative path of each row) and ``image_backbone.json``
(:class:`isr.encoders.eyes.Eyes`: ``isr train`` copies it into the bundle). Resumable: rows
are written into a ``.partial`` memory map and ``extract.json`` records how many are done;
a rerun continues there, and a finished directory is reused as is (when the photos, the
captions and the backbone are the same; otherwise it is refused, naming what changed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from isr.encoders.eyes import write_eyes
from isr.errors import Conflict, InvalidInput
from isr.ingest.fields import read_fields
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.images import decode_image, list_images

__all__ = ["Extracted", "extract_precomp"]

STATE = "extract.json"
PER_IMAGE = 5


@dataclass(frozen=True)
class Extracted:
    out_dir: Path
    sizes: dict[str, int]  # rows per split
    uncaptioned: int  # photos left out: no caption
    unreadable: int  # photos left out: could not be decoded
    reused: bool  # the directory was complete already


def _captions(row: Any, where: str) -> list[str]:
    caps = row.get("captions", row.get("caption"))
    if isinstance(caps, str):
        caps = [caps]
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise InvalidInput(f"{where}: 'caption' must be a string or 'captions' a list of strings")
    return [c.replace("\n", " ").strip() for c in caps if c.strip()]


def extract_precomp(
    image_dir: str | Path,
    captions_file: str | Path,
    backbone: ImageBackbone,
    out_dir: str | Path,
    dev_fraction: float = 0.1,
    dev_max: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> Extracted:
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    table = read_fields(captions_file)
    files = list_images(image_dir)
    pairs: list[tuple[str, list[str]]] = []
    uncaptioned = 0
    for rel in files:
        row = table.lookup(rel, {"path": rel, "file_name": rel.rsplit("/", 1)[-1]})
        caps = _captions(row, f"{captions_file} [{rel}]") if row is not None else []
        if caps:
            pairs.append((rel, caps))
        else:
            uncaptioned += 1
    if len(pairs) < 4:
        raise InvalidInput(
            f"{len(pairs)} captioned photos under {image_dir} (of {len(files)}): training needs "
            "at least 4 (give each a 'caption' in the captions file)"
        )
    rng = np.random.default_rng(seed)
    n_dev = min(dev_max, max(1, round(len(pairs) * dev_fraction)))
    dev_rows = set(rng.permutation(len(pairs))[:n_dev].tolist())
    splits = {
        "train": [p for i, p in enumerate(pairs) if i not in dev_rows],
        "dev": [p for i, p in enumerate(pairs) if i in dev_rows],
    }
    what = {
        "images": str(image_dir.resolve()),
        "captions": str(Path(captions_file).resolve()),
        "backbone": backbone.eyes.fingerprint,
        "k": backbone.k,
        "files": {s: [rel for rel, _ in v] for s, v in splits.items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    state_file = out_dir / STATE
    state: dict[str, Any] = {"what": what, "done": {}, "unreadable": {}}
    if state_file.is_file():
        old = json.loads(state_file.read_text(encoding="utf-8"))
        if old.get("what") != what:
            changed = [k for k in what if old.get("what", {}).get(k) != what[k]]
            raise Conflict(
                f"{out_dir} holds features of other inputs (changed: {', '.join(changed)}): "
                "extract into a new directory"
            )
        state = old
    reused = all(state["done"].get(s) == "complete" for s in splits)
    sizes: dict[str, int] = {}
    for split, rows in splits.items():
        if state["done"].get(split) == "complete":
            sizes[split] = int(np.load(out_dir / f"{split}_ims.npy", mmap_mode="r").shape[0])
            continue
        sizes[split] = _extract_split(
            image_dir, rows, backbone, out_dir, split, state, state_file, batch_size, progress
        )
    write_eyes(out_dir, backbone.eyes)
    return Extracted(out_dir, sizes, uncaptioned, sum(state["unreadable"].values()), reused)


def _extract_split(
    image_dir: Path,
    rows: list[tuple[str, list[str]]],
    backbone: ImageBackbone,
    out_dir: Path,
    split: str,
    state: dict[str, Any],
    state_file: Path,
    batch_size: int,
    progress: bool,
) -> int:
    """Rows are written in order; an unreadable photo keeps its row (zeros) and is dropped at
    the end, so a resumed run writes the same rows at the same places."""
    part = out_dir / f"{split}_ims.npy.partial"
    n, k, d = len(rows), backbone.k, backbone.dim
    start = int(state["done"].get(split, 0)) if part.is_file() else 0
    mm = (
        np.lib.format.open_memmap(part, mode="r+")
        if start
        else np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(n, k, d))
    )
    bad: list[int] = list(state.setdefault("bad", {}).get(split, []))
    with tqdm(total=n, initial=start, unit="img", desc=f"features {split}",
              disable=not progress, mininterval=1.0) as bar:  # fmt: skip
        for s in range(start, n, batch_size):
            e = min(s + batch_size, n)
            ims, at = [], []
            for i in range(s, e):
                im = decode_image(image_dir / rows[i][0], 1)
                if isinstance(im, tuple):
                    bad.append(i)
                else:
                    ims.append(im)
                    at.append(i)
            if ims:
                f = backbone.features(ims)  # (b, k, D); padded regions are zeros
                mm[at] = np.where(f.mask[..., None], f.regions, 0.0)
            mm.flush()
            state["done"][split] = e
            state["bad"][split] = bad
            _save(state_file, state)
            bar.update(e - s)
    keep = [i for i in range(n) if i not in set(bad)]
    np.save(out_dir / f"{split}_ims.npy", np.asarray(mm[keep], dtype=np.float32))
    del mm
    part.unlink()
    lines = []
    for i in keep:
        caps = rows[i][1]
        lines += [caps[j % len(caps)] for j in range(PER_IMAGE)]
    (out_dir / f"{split}_caps.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out_dir / f"{split}_images.txt").write_text(
        "".join(rows[i][0] + "\n" for i in keep), encoding="utf-8"
    )
    state["done"][split] = "complete"
    state["unreadable"][split] = len(bad)
    _save(state_file, state)
    return len(keep)


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    tmp.replace(path)
