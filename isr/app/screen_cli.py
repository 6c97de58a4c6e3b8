"""`isr eval screen-curve` and `isr eval train-heads`: the keyword screen measured on its own,
and the dedicated keyword-head stage (shims: `python eval/screen_curve.py`,
`python eval/train_heads.py`).

Entry points: :data:`screen_curve_cmd`, :data:`train_heads_cmd`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from isr.app.presets import json_object
from isr.app.runtime import set_threads
from isr.encoders.bundle import write_bundle
from isr.encoders.head_stage import HeadConfig, train_heads
from isr.encoders.vocabulary import KEYWORDS_FILE, KeywordVocab
from isr.eval.caption_images import flickr_dir
from isr.eval.keywords import mean_average_precision
from isr.eval.screen_curve import _open, screen_curve
from isr.ingest.precomp import PrecompSplit, group_captions, read_captions

__all__ = ["screen_curve_cmd", "train_heads_cmd"]


@click.command("screen-curve")
@click.option("--bundle", type=click.Path(path_type=Path, exists=True), required=True)
@click.option(
    "--data",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="precomp folder ({split}_ims.npy, {split}_caps.txt)",
)
@click.option("--split", default="test", show_default=True)
@click.option("--caps-per-image", type=int, default=5, show_default=True)
@click.option(
    "--label-captions",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="captions giving the image labels (5 per image); default the split's own",
)
@click.option("--stop", type=float, default=1.0, show_default=True)
@click.option(
    "--size",
    type=int,
    default=10,
    show_default=True,
    help="hits asked for: a screen admitting fewer is relaxed (searched unscreened), as the engine",
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def screen_curve_cmd(
    bundle: Path,
    data: Path,
    split: str,
    caps_per_image: int,
    label_captions: Path | None,
    stop: float,
    size: int,
    out: Path,
) -> None:
    """The keyword screen alone: head mAP, and ground truth kept vs gallery admitted."""
    set_threads(1)
    images = np.load(data / f"{split}_ims.npy", mmap_mode="r")
    texts = read_captions(data / f"{split}_caps.txt")
    truth = np.arange(len(texts)) // caps_per_image
    stage = _open(bundle)
    if stage.keyword_vocab is None:
        raise click.UsageError(f"{bundle} has no keyword vocabulary (keywords.json)")
    groups = group_captions(
        read_captions(label_captions) if label_captions else texts,
        5 if label_captions else caps_per_image,
    )
    labels = stage.keyword_vocab.multi_hot(groups)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = screen_curve(bundle, images, texts, truth, labels, stop=stop, size=size,
                       probs_file=out.with_suffix(".probs.npz"))  # fmt: skip
    res["command"] = " ".join(["isr eval screen-curve", *sys.argv[1:]])
    out.write_text(json.dumps(res, indent=1))
    click.echo(json.dumps({k: v for k, v in res.items() if k != "points"}, indent=1))
    for p in sorted(res["points"], key=lambda p: (p["mode"], p["admitted"])):
        if p["kept"] >= 0.95:
            click.echo(
                f"{p['mode']:5s} R_I={p['r_i']:2d} alpha={p['alpha']:.1f} R_T={p['r_t']} "
                f"miss={p['miss']:g} "
                f"kept={100 * p['kept']:.1f} admitted={100 * p['admitted']:.1f} "
                f"lift={p['lift']:.2f}"
            )


@click.command("train-heads")
@click.option("--data", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--kind", type=click.Choice(["world", "captions"]), required=True)
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    default=None,
    help="captions folder for --kind captions (default ../shared/data/flickr30k)",
)
@click.option("--base", type=click.Path(path_type=Path), required=True, help="finished B stage")
@click.option("--fast", type=click.Path(path_type=Path), required=True, help="finished F stage")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--config", "config_json", default="{}", help="HeadConfig fields as JSON")
@click.option(
    "--min-images",
    type=int,
    default=None,
    help="Build the heads' vocabulary from the training captions at this threshold (default: "
    "B's own vocabulary); the paper's 100 of ~29K images scales to N x 100 / 29,000.",
)
@click.option("--threads", type=int, default=1, show_default=True)
def train_heads_cmd(
    data: Path,
    kind: str,
    source: Path | None,
    base: Path,
    fast: Path,
    out: Path,
    config_json: str,
    min_images: int | None,
    threads: int,
) -> None:
    """The dedicated keyword-head stage on the frozen B, then a bundle with the new heads.

    world: a precomp folder whose train split has its captions (labels from them, val = dev).
    captions: the caption-described-image folder (isr eval make-caption-images): the dev images
    and their five source captions, 10% of dev held out for the per-epoch mAP.
    """
    set_threads(threads)
    cfg = HeadConfig.from_dict(json_object(config_json, "--config", "head settings"))
    vocab = KeywordVocab.load(base / KEYWORDS_FILE)
    if kind == "world":
        tr, va = PrecompSplit.open(data, "train"), PrecompSplit.open(data, "dev")
        c = tr.caps_per_image
        tr_caps, va_caps = list(tr.captions), list(va.captions)
        if min_images is not None:
            vocab = KeywordVocab.build(group_captions(tr_caps, c), min_images=min_images)
        tr_im, va_im = np.asarray(tr.images), np.asarray(va.images)
        tr_y = vocab.multi_hot(group_captions(tr_caps, c))
        va_y = vocab.multi_hot(group_captions(va_caps, va.caps_per_image))
        tr_ti = np.arange(len(tr_caps)) // c
        va_ti = np.arange(len(va_caps)) // va.caps_per_image
    else:
        src = source if source is not None else flickr_dir()
        groups = group_captions(read_captions(src / "dev_caps.txt"), 5)
        ims = np.load(data / "dev_ims.npy")
        perm = np.random.default_rng([cfg.seed, 7]).permutation(len(groups))
        n_val = len(groups) // 10
        vi, ti = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        if min_images is not None:  # from the training images only, never the held-out ones
            vocab = KeywordVocab.build([groups[i] for i in ti], min_images=min_images)
        y = vocab.multi_hot(groups)
        tr_im, va_im, tr_y, va_y = ims[ti], ims[vi], y[ti], y[vi]
        tr_caps = [c for i in ti for c in groups[i]]
        va_caps = [c for i in vi for c in groups[i]]
        tr_ti = np.repeat(np.arange(len(ti)), 5)
        va_ti = np.repeat(np.arange(len(vi)), 5)
    done = train_heads(
        base, out, vocab=vocab, train_images=tr_im, train_texts=tr_caps, train_labels=tr_y,
        text_image=tr_ti, val_images=va_im, val_texts=va_caps, val_labels=va_y,
        val_text_image=va_ti, cfg=cfg, map_fn=mean_average_precision,
        command=" ".join(["isr eval train-heads", *sys.argv[1:]]),
    )  # fmt: skip
    click.echo(f"vocabulary: {len(vocab)} labels (min_images {vocab.min_images})")
    click.echo(f"bundle {write_bundle(done, fast, done / 'bundle')}")
