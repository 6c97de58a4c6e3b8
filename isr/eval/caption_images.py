"""A caption-described-image benchmark from any folder of captions (no image features needed).

Entry points: :func:`flickr_dir` (the project's shared caption set, ``../shared/data/flickr30k``
beside the project, or NotFound), :func:`write_caption_images` (one split in the precomp
layout), :func:`prepare` (the splits asked for, plus a bundle trained on the training split)
and :func:`source_splits` (which caption files a folder holds). ``isr eval make-caption-images``
is the command line.

The source is a folder in the precomp layout's caption form: ``{split}_caps.txt`` per split
(``train``, ``dev``, ``test``; any subset), five captions per image, image i owning lines
5i..5i+4. Each image's stand-in "image" is made of four of its captions: the regions are the
token vectors of captions 0-3 from the text backbone (MiniLM, the last hidden states, special
tokens dropped, the four captions concatenated), reduced to 32 centres by k-means as the paper
reduces detector boxes (:func:`isr.encoders.kmeans.kmeans_reduce`). Caption 4 is its one text.
So t2i asks: which image do the other four captions describe? This is a caption-described-image
benchmark, not image retrieval: the "image" side sees human language through MiniLM, not
pixels, and scores are not comparable with a paper's image-retrieval table.

Written per split into ``out_dir`` (the precomp layout, read by every tool the same way):
``{split}_ims.npy`` (N, 32, 384) float32 and ``{split}_caps.txt`` (caption 4 of each image, one
per line: one caption per image). The layout has no region mask, so an image whose four
captions give fewer than 32 token vectors repeats its vectors in order to fill 32 rows
(a repeated region changes no max-sim score). ``caption_images.json`` records the source files
(with their sha256), the backbone, k, the caption roles and the splits used for training and
validation.

The bundle (:func:`prepare`) is trained on the training split (``train`` when the source has
one, else ``dev``) built the same way: PairedData with one caption per image (caption 4) and
keyword targets from all five captions (an image's labels are the union over its captions, as
in Cao et al.); a vocabulary from about 1,000 images needs ``min_images`` lowered to about 10.
The per-epoch validation recall is measured on a split the model never trains on: ``dev`` when
training on ``train``, else ``test``. No checkpoint is chosen by it (every epoch runs and the
last is kept), so with ``test`` it is a learning curve on the held-out images, not tuning.
Recipes: "shrink" (default), B with the triplet loss then F distilled from it (the paper's
B -> F row); "paper", I -> B -> F, about twice the time; "plain", B and F each on its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from isr.encoders.backbone import minilm_path
from isr.encoders.bundle import write_bundle
from isr.encoders.kmeans import kmeans_reduce
from isr.encoders.train import PairedData, TrainConfig, run_recipe, train_stage
from isr.encoders.vocabulary import KeywordVocab
from isr.errors import InvalidInput, NotFound
from isr.ingest.precomp import group_captions, read_captions

__all__ = [
    "QUERY_CAPTION",
    "REGION_CAPTIONS",
    "SPLITS",
    "flickr_dir",
    "prepare",
    "source_splits",
    "token_regions",
    "training_splits",
    "write_caption_images",
]

REGION_CAPTIONS = (0, 1, 2, 3)
QUERY_CAPTION = 4
K = 32
INFO_FILE = "caption_images.json"
SPLITS = ("train", "dev", "test")
CAPS_PER_IMAGE = 5
ROOT = Path(__file__).resolve().parents[2]  # the project root (isr/eval/ -> .)


def flickr_dir(root: Path = ROOT) -> Path:
    """``../shared/data/flickr30k`` beside the project root (never copied into the repo): the
    default caption source."""
    path = root.parent / "shared" / "data" / "flickr30k"
    if not (path / "test_caps.txt").is_file():
        raise NotFound(
            f"the shared caption set was not found at {path} (expected test_caps.txt and "
            "dev_caps.txt; see ../shared/data/README.md); pass a source folder instead"
        )
    return path


def source_splits(source: Path) -> list[str]:
    """The splits of :data:`SPLITS` whose ``{split}_caps.txt`` the source folder holds."""
    return [sp for sp in SPLITS if (Path(source) / f"{sp}_caps.txt").is_file()]


def _check_source(source: Path, splits: Sequence[str]) -> None:
    """NotFound naming every missing caption file (and what the folder does hold)."""
    bad = [sp for sp in splits if sp not in SPLITS]
    if bad:
        raise InvalidInput(f"unknown splits {bad}: expected some of {list(SPLITS)}")
    if not Path(source).is_dir():
        raise NotFound(f"caption source {source} is not a folder")
    missing = [str(Path(source) / f"{sp}_caps.txt") for sp in splits
               if not (Path(source) / f"{sp}_caps.txt").is_file()]  # fmt: skip
    if missing:
        have = source_splits(source)
        raise NotFound(
            f"caption files missing: {', '.join(missing)} (the folder holds "
            f"{[f'{sp}_caps.txt' for sp in have] or 'no *_caps.txt'})"
        )


def token_regions(
    groups: Sequence[Sequence[str]],
    backbone: Path | None = None,
    k: int = K,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """Regions of caption-described images: (N, k, H) float32 k-means centres of the token
    vectors (last hidden states, special tokens dropped) of each group's captions."""
    from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415  (slow import)

    path = Path(backbone) if backbone is not None else minilm_path()
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    flat = [c for g in groups for c in g]
    if any(not c.strip() for c in flat):
        raise InvalidInput("token_regions: an empty caption describes no image")
    vecs: list[np.ndarray] = []
    with torch.inference_mode():
        for s in tqdm(range(0, len(flat), batch_size), desc="token vectors", disable=not progress):
            enc = tok(flat[s : s + batch_size], padding=True, truncation=True, max_length=64,
                      return_tensors="pt", return_special_tokens_mask=True)  # fmt: skip
            special = enc.pop("special_tokens_mask").bool()
            h = model(**enc).last_hidden_state  # (b, t, H)
            keep = enc["attention_mask"].bool() & ~special  # (b, t)
            vecs += [h[i][keep[i]].numpy() for i in range(h.shape[0])]
    out = np.zeros((len(groups), k, vecs[0].shape[1]), np.float32)
    at = 0
    for s in range(0, len(groups), 256):  # k-means in batches of images
        chunk = groups[s : s + 256]
        per = []
        for g in chunk:
            per.append(np.concatenate(vecs[at : at + len(g)]))  # (m_i, H)
            at += len(g)
        m = max(len(p) for p in per)
        x = torch.zeros(len(per), m, per[0].shape[1])
        mask = torch.zeros(len(per), m, dtype=torch.bool)
        for i, p in enumerate(per):
            x[i, : len(p)] = torch.from_numpy(p)
            mask[i, : len(p)] = True
        c, cm = kmeans_reduce(x, mask, k)  # (b, k, H), (b, k)
        n = cm.sum(1)  # (b,)
        fill = torch.arange(k)[None, :] % n[:, None]  # repeat the real centres in order
        out[s : s + len(chunk)] = torch.gather(c, 1, fill[..., None].expand_as(c)).numpy()
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_caption_images(
    caps_file: Path,
    out_dir: Path,
    split: str,
    backbone: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``{split}_ims.npy`` and ``{split}_caps.txt`` for the 5-per-image captions file;
    returns the split's entry of ``caption_images.json``."""
    caps = read_captions(Path(caps_file))
    if not caps or len(caps) % CAPS_PER_IMAGE:
        raise InvalidInput(
            f"{caps_file}: {len(caps)} captions, expected a positive multiple of "
            f"{CAPS_PER_IMAGE} (five per image)"
        )
    groups = group_captions(caps, CAPS_PER_IMAGE)
    regions = token_regions(
        [[g[j] for j in REGION_CAPTIONS] for g in groups], backbone, progress=progress
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"{split}_ims.partial.npy"
    np.save(tmp, regions)
    tmp.replace(out_dir / f"{split}_ims.npy")
    text = "".join(g[QUERY_CAPTION].strip() + "\n" for g in groups)
    (out_dir / f"{split}_caps.txt").write_text(text, encoding="utf-8")
    return {
        "source": str(Path(caps_file).resolve()),
        "source_sha256": _sha256(Path(caps_file)),
        "images": len(groups),
        "region_captions": list(REGION_CAPTIONS),
        "query_caption": QUERY_CAPTION,
        "k": K,
        "dim": int(regions.shape[2]),
    }


def paired_split(
    data_dir: Path,
    split: str,
    caps_file: Path,
    min_images: int = 10,
    vocab: KeywordVocab | None = None,
) -> tuple[PairedData, KeywordVocab]:
    """Pairs of one written split: each caption-described image with its caption 4, and
    keyword targets from all five captions of the image (the vocabulary built here from this
    split with ``min_images``, unless ``vocab`` is given, e.g. the training split's)."""
    groups = group_captions(read_captions(Path(caps_file)), CAPS_PER_IMAGE)
    images = np.load(Path(data_dir) / f"{split}_ims.npy")
    texts = read_captions(Path(data_dir) / f"{split}_caps.txt")
    if len(texts) != len(groups) or images.shape[0] != len(groups):
        raise InvalidInput(
            f"{data_dir}: {split} has {images.shape[0]} images and {len(texts)} captions, "
            f"{caps_file} describes {len(groups)}; rebuild the folder"
        )
    if vocab is None:
        vocab = KeywordVocab.build(groups, min_images=min_images)
    labels = vocab.multi_hot(groups) if vocab.labels else None
    return PairedData(images, texts, labels, None, caps_per_image=1), vocab


def training_splits(available: Sequence[str]) -> tuple[str, str]:
    """(training split, validation split) among the written splits: train + dev when there is
    a train split, else dev + test (validation never on a training image)."""
    if "train" in available:
        if "dev" not in available:
            raise NotFound("a train split needs a dev split to validate on (dev_caps.txt)")
        return "train", "dev"
    if "dev" in available and "test" in available:
        return "dev", "test"
    raise NotFound(
        f"training needs train + dev or dev + test caption files, the splits written are "
        f"{list(available)}; pass train=False to write the images only"
    )


def prepare(
    out_dir: Path,
    source: Path | None = None,
    train: TrainConfig | None = None,
    min_images: int = 10,
    backbone: Path | None = None,
    recipe: Literal["shrink", "paper", "plain"] = "shrink",
    run_dir: Path | None = None,
    command: str = "",
    progress: bool = True,
    splits: Sequence[str] | None = None,
    fit: bool = True,
) -> Path | None:
    """Write the ``splits`` (default: every split the source holds) as caption-described
    images into ``out_dir`` (a split is skipped when ``caption_images.json`` says it is there)
    and, with ``fit``, train a bundle into ``run_dir`` (default ``out_dir/train``; resumed
    when interrupted) on the training split, validating on another
    (:func:`training_splits`). Returns the bundle directory, or None without ``fit``."""
    if recipe not in ("shrink", "paper", "plain"):
        raise InvalidInput(f"recipe {recipe!r} is not 'shrink', 'paper' or 'plain'")
    src = Path(source) if source is not None else flickr_dir()
    want = list(splits) if splits is not None else source_splits(src)
    if not want:
        raise NotFound(
            f"{src} holds no caption files ({', '.join(f'{s}_caps.txt' for s in SPLITS)})"
        )
    _check_source(src, want)
    tr_split, val_split = training_splits(want) if fit else ("", "")
    out_dir = Path(out_dir)
    info_file = out_dir / INFO_FILE
    info = json.loads(info_file.read_text()) if info_file.exists() else {}
    bb = Path(backbone) if backbone is not None else minilm_path()
    for split in want:
        caps = src / f"{split}_caps.txt"
        if info.get(split, {}).get("source_sha256") == _sha256(caps):
            continue
        info[split] = write_caption_images(caps, out_dir, split, bb, progress)
        info["backbone"] = str(bb)
        info["kind"] = "caption-described images (not image retrieval)"
        info_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if not fit:
        return None
    data, vocab = paired_split(out_dir, tr_split, src / f"{tr_split}_caps.txt", min_images)
    val, _ = paired_split(out_dir, val_split, src / f"{val_split}_caps.txt", vocab=vocab)
    info["training"] = {
        "train_split": tr_split,
        "val_split": val_split,
        "validation": f"per-epoch recall on all {len(val)} images of the {val_split} split "
        "(never trained on; no checkpoint is selected by it)",
    }
    info_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    cfg = train or TrainConfig()
    if cfg.backbone is None:
        cfg = replace(cfg, backbone=str(bb))
    run = Path(run_dir) if run_dir is not None else out_dir / "train"
    if recipe != "shrink":
        return run_recipe(recipe, cfg, data, run, vocab=vocab, val=val, command=command)
    kw: dict[str, Any] = {"vocab": vocab, "val": val, "command": command}
    base = train_stage("base", cfg, data, run / "base", **kw)
    fast = train_stage("shrink-fast", cfg, data, run / "shrink-fast", teacher_dir=base, **kw)
    return write_bundle(base, fast, run / "bundle")
