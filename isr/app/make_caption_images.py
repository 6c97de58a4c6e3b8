"""Build the Flickr30K caption-described-image benchmark and train its bundle.

Run: ``isr eval make-caption-images --out runs/flickr30k-captions`` or
``python eval/make_caption_images.py ...`` (then ``isr eval trec --data runs/flickr30k-captions --bundle
runs/flickr30k-captions/train/bundle ...``). This file only parses arguments and calls
:func:`isr.eval.caption_images.prepare`; see that module for what the benchmark is (and is not).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from isr.app.runtime import set_threads
from isr.encoders.train import TrainConfig
from isr.errors import IsrError
from isr.eval.caption_images import prepare


@click.command("make-caption-images", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for {test,dev}_ims.npy, {test,dev}_caps.txt and train/ (under runs/).",
)
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder with test_caps.txt and dev_caps.txt (default ../shared/data/flickr30k).",
)
@click.option(
    "--min-images",
    type=int,
    default=10,
    show_default=True,
    help="Keyword vocabulary threshold (1,014 dev images).",
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
def main(out_dir: Path, source: Path | None, min_images: int, config_json: str | None,
         recipe: str, run_dir: Path | None, threads: int) -> None:  # fmt: skip
    """Write caption-described images (MiniLM token vectors of 4 captions -> 32 k-means centres)
    for test and dev, and train a bundle on dev."""
    try:
        set_threads(threads)
        try:
            fields = json.loads(config_json) if config_json else {}
        except json.JSONDecodeError as e:
            raise click.BadParameter(f"--config: not valid JSON ({e})") from e
        bundle = prepare(
            out_dir,
            source=source,
            train=TrainConfig.from_dict(fields),
            min_images=min_images,
            recipe=recipe,  # type: ignore[arg-type]
            run_dir=run_dir,
            command=" ".join(sys.argv),
        )
    except IsrError as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from e
    click.echo(f"bundle: {bundle}")
