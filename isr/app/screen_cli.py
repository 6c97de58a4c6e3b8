"""`isr eval screen-curve` and `isr eval train-heads`: the keyword screen measured on its own,
and the dedicated keyword-head stage (shims: `python eval/screen_curve.py`,
`python eval/train_heads.py`); `isr index calibrate-screen`: an index's screen scale and gain
measured on a labelled split and recorded in its keyword defaults.

Entry points: :data:`screen_curve_cmd`, :data:`train_heads_cmd`, :data:`calibrate_screen_cmd`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from isr.app.presets import json_object, keyword_defaults
from isr.app.runtime import set_threads
from isr.encoders.bundle import write_bundle
from isr.encoders.head_stage import HeadConfig, train_heads
from isr.encoders.vocabulary import KEYWORDS_FILE, KeywordVocab
from isr.eval.caption_images import flickr_dir
from isr.eval.keywords import mean_average_precision
from isr.eval.screen_calibrate import Calibration, calibrate
from isr.eval.screen_curve import _open, gallery_probs, screen_curve
from isr.ingest.precomp import PrecompSplit, group_captions, read_captions
from isr.plugin import EmbeddedIndex

__all__ = [
    "calibrate_screen_cmd", "calibrate_split", "describe", "screen_curve_cmd", "train_heads_cmd",
]  # fmt: skip


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


@click.command("calibrate-screen")
@click.argument("path", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--data",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="precomp folder holding the labelled split ({split}_ims.npy, {split}_caps.txt)",
)
@click.option("--split", default="dev", show_default=True, help="a split the report does not use")
@click.option(
    "--caps-per-image",
    type=int,
    default=None,
    help="captions per image in the split (default: captions / images)",
)
@click.option(
    "--bundle",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="the bundle (or B stage) that encodes the index (default: its recorded bundle_path)",
)
@click.option(
    "--kept",
    type=float,
    default=0.994,
    show_default=True,
    help="ground truth the screen must keep on the split",
)
@click.option("--dry-run", is_flag=True, help="measure and print, record nothing")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="every point, JSON")
def calibrate_screen_cmd(
    path: Path,
    data: Path,
    split: str,
    caps_per_image: int | None,
    bundle: Path | None,
    kept: float,
    dry_run: bool,
    out: Path | None,
) -> None:
    """Measure the screen's scale and gain for the index at PATH on a labelled split and record
    them in its keyword defaults (isr.eval.screen_calibrate; queries of the other modality
    against the split's items of the index's, the index's other defaults held)."""
    with EmbeddedIndex.open(path, readonly=dry_run) as idx:
        cfg = idx.config
        src = bundle if bundle is not None else cfg.bundle_path
        if not src:
            raise click.UsageError(f"{path} records no bundle_path: pass --bundle")
        stage = _open(Path(src))
        if stage.keyword_vocab is None:
            raise click.UsageError(f"{src} has no keyword vocabulary (keywords.json)")
        images = np.load(data / f"{split}_ims.npy")  # a dev split: small, read whole
        texts = read_captions(data / f"{split}_caps.txt")
        c = caps_per_image or len(texts) // max(1, len(images))
        if c < 1 or len(texts) != c * len(images):
            raise click.UsageError(
                f"{data}/{split}: {len(texts)} captions for {len(images)} images is not "
                f"{c} per image (--caps-per-image)"
            )
        r_i = cfg.keywords.get("r_i") or cfg.r_i
        # the options the scale and gain are picked under: the index's own, or (an index from
        # before recorded defaults) what `isr index create` records for its modality today
        base = cfg.keywords or keyword_defaults(None, modality=cfg.modality)
        cal = calibrate_split(stage, images, texts, c, cfg.modality, base, r_i, kept)
        click.echo(
            f"{path} ({cfg.modality} gallery, R_I {r_i}) on {data}/{split} ({len(images)} "
            f"images, {len(texts)} captions): {describe(cal, kept)}"
        )
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"measured": cal.measured, "scale": cal.scale,
                                       "gain": cal.gain, "kept": cal.kept, "admitted": cal.admitted,
                                       "met": cal.met, "points": cal.points,
                                       "command": " ".join(["isr index calibrate-screen", *sys.argv[1:]])},
                                      indent=1))  # fmt: skip
        if not dry_run:
            new = idx.set_keyword_defaults({**base, **cal.defaults()})
            click.echo(f"recorded keyword defaults {new.keywords}")


def calibrate_split(
    stage: Any,
    images: np.ndarray,
    texts: list[str],
    c: int,
    modality: str,
    base: dict[str, Any],
    r_i: int,
    kept: float,
) -> Calibration:
    """The screen's (scale, gain) for a ``modality`` gallery, measured on a labelled split
    (``images`` with ``c`` captions each, caption t of image t // c) encoded by ``stage``:
    queries of the other modality, the gallery the split's items of this one; ``base``: the
    other keyword options, held."""
    pi, pt = gallery_probs(stage, images, texts)  # (N, L), (N c, L)
    if modality == "text":  # image queries against captions
        q, g = pi, pt
        rel = [np.arange(c * t, c * t + c) for t in range(len(pi))]
    else:
        q, g = pt, pi
        rel = [np.array([t // c]) for t in range(len(pt))]
    rank = np.argsort(np.argsort(-g, axis=1), axis=1)
    held = {k: v for k, v in base.items() if k not in ("scale", "gain")}
    return calibrate(q, rank, rel, r_i, held, kept=kept)


def describe(cal: Calibration, kept: float) -> str:
    return (
        f"measured s/p {cal.measured:.3f}; picked scale {cal.scale:g}, gain {cal.gain:g}: kept "
        f"{100 * cal.kept:.2f}%, admitted {100 * cal.admitted:.2f}%"
        + ("" if cal.met else f" (no point kept {100 * kept:g}%: the most-kept one)")
    )
