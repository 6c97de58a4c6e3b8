"""Build a caption-described-image benchmark from a folder of caption files, and train its bundle.

Run: ``isr eval make-caption-images --out runs/flickr30k-captions`` (the shared caption set) or
``isr eval make-caption-images --source DIR --splits test --no-train --out ...`` or
``python eval/make_caption_images.py ...`` (then ``isr eval trec --data runs/flickr30k-captions --bundle
runs/flickr30k-captions/train/bundle ...``). This file only parses arguments and calls
:func:`isr.eval.caption_images.prepare`; see that module for what the benchmark is (and is not).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from isr.app.presets import json_object
from isr.app.runtime import set_threads
from isr.encoders.train import TrainConfig
from isr.errors import IsrError
from isr.eval.caption_images import INFO_FILE, SPLITS, prepare


@click.command("make-caption-images", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for {split}_ims.npy, {split}_caps.txt and train/ (under runs/).",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder of {train,dev,test}_caps.txt, 5 captions per image "
    "(default: the shared caption set, ../shared/data/flickr30k).",
)
@click.option(
    "--splits",
    type=click.Choice(["train", "dev", "test"]),
    multiple=True,
    help="Splits to write (repeatable; default: every caption file the source holds).",
)
@click.option(
    "--no-train",
    is_flag=True,
    help="Write the caption-described images only (e.g. --splits test).",
)
@click.option(
    "--min-images",
    type=int,
    default=10,
    show_default=True,
    help="Keyword vocabulary threshold (about 10 for 1,000 training images).",
)
@click.option(
    "--config",
    "config_json",
    default=None,
    help="TrainConfig fields as JSON, e.g. '{\"epochs\": 10}'.",
)
@click.option(
    "--recipe",
    type=click.Choice(["shrink", "paper", "plain"]),
    default="shrink",
    show_default=True,
    help="shrink: B then F distilled from B; paper: I -> B -> F; plain: B and F alone.",
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Training run folder (stages + bundle); default OUT/train.",
)
@click.option("--threads", type=int, default=1, show_default=True)
def main(out_dir: Path, source: Path | None, splits: tuple[str, ...], no_train: bool,
         min_images: int, config_json: str | None, recipe: str, run_dir: Path | None,
         threads: int) -> None:  # fmt: skip
    """Write caption-described images (MiniLM token vectors of 4 captions -> 32 k-means centres)
    for each split, and train a bundle on the training split (train, else dev), validating on
    a split it never trains on (dev, else test)."""
    try:
        set_threads(threads)
        fields = json_object(config_json, "--config", "training settings")
        bundle = prepare(
            out_dir,
            source=source,
            train=TrainConfig.from_dict(fields),
            min_images=min_images,
            recipe=recipe,  # type: ignore[arg-type]
            run_dir=run_dir,
            command=" ".join(sys.argv),
            splits=splits or None,
            fit=not no_train,
        )
    except IsrError as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from e
    info = json.loads((out_dir / INFO_FILE).read_text())
    written = [sp for sp in SPLITS if sp in info]
    click.echo(f"caption-described images: {written} in {out_dir}")
    if bundle is not None:
        click.echo(
            f"trained on {info['training']['train_split']}; {info['training']['validation']}"
        )
        click.echo(f"bundle: {bundle}")
