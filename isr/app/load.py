"""Load a gallery into an index: ``isr load SOURCE ... --index DIR`` (also
``python ingest/load_gallery.py SOURCE ...``, the same command).

Entry point: :func:`main` (click). Each source is a subcommand that only builds the source
and the options and calls :func:`isr.ingest.loader.load_gallery`:

    precomp DIR --split test      SCAN precomp features + captions (and the synthetic world)
    karpathy JSON --images DIR --backbone DIR --split test
                                  images through a local vision backbone
    images DIR --backbone DIR     a folder of photos (recursive) through a local vision backbone
    captions FILE                 a text gallery, one document per caption
    encoded FILE.jsonl|.parquet   features encoded elsewhere (no bundle)

``--index`` is an index directory (the embedded index, created when absent) or an
Elasticsearch index, ``http(s)://host:port/INDEX`` (created when absent, with its fragments
in a ``--sidecar DIR`` or, with ``--es-fragments rank_vectors``, in the index itself; the API
key comes from ``--es-api-key`` or ``ISR_ES_API_KEY``).

``--fields FILE`` (every source) joins a CSV / JSONL of your own fields onto each document's
``_source`` (keyed by id, relative path or file name; :mod:`isr.ingest.fields`), so they
can be filtered on. Progress goes to stderr (tqdm); the summary (or ``--json``, the report) to stdout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from isr.app.presets import keyword_defaults
from isr.app.runtime import set_threads
from isr.encoders.bundle import Bundle
from isr.errors import IsrError
from isr.ingest.captions import CaptionSource
from isr.ingest.encoded_file import EncodedFileSource
from isr.ingest.image_backbone import ImageBackbone
from isr.ingest.karpathy import KarpathySource
from isr.ingest.loader import IngestOptions, load_gallery
from isr.ingest.precomp_source import PrecompSource
from isr.plugin import EsOptions, check_target, is_url
from isr.plugin.es.writer import parse_es_target

__all__ = ["main"]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IsrError as e:
            report = getattr(e, "report", None)
            if report is not None:  # a --strict stop: say what was committed first
                click.echo(report.summary())
            raise click.ClickException(f"{type(e).__name__}: {e}") from e


def _target(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if is_url(value):  # the URL's form, before anything is loaded for nothing
        try:
            parse_es_target(value)
        except IsrError as e:
            raise click.BadParameter(str(e), ctx, param) from e
    return value


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option(
            "--index",
            "target",
            required=True,
            callback=_target,
            help="Index directory, or Elasticsearch index http(s)://host:port/INDEX "
            "(created when absent).",
        ),
        click.option(
            "--sidecar",
            type=click.Path(path_type=Path, file_okay=False),
            default=None,
            help="Elasticsearch target: the sidecar directory of its fragments.",
        ),
        click.option(
            "--es-fragments",
            type=click.Choice(["sidecar", "rank_vectors"]),
            default="sidecar",
            show_default=True,
            help="Elasticsearch target: fragments in the --sidecar, or in the index itself "
            "(rank_vectors, reranked by Elasticsearch).",
        ),
        click.option(
            "--es-api-key",
            envvar="ISR_ES_API_KEY",
            default=None,
            help="Elasticsearch target: API key (default: $ISR_ES_API_KEY).",
        ),
        click.option("--batch-size", type=int, default=256, show_default=True),
        click.option(
            "--commit-every",
            type=int,
            default=10_000,
            show_default=True,
            help="Commit (with the source position) after this many source items.",
        ),
        click.option("--resume", is_flag=True, help="Continue after this source's last commit."),
        click.option("--strict", is_flag=True, help="Stop at the first bad item."),
        click.option("--limit", type=int, default=None, help="Stop after about N items."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        click.option(
            "--codec",
            type=click.Choice(["fp32", "fp16", "sq8"]),
            default="fp16",
            show_default=True,
            help="Fragment codec of a new index.",
        ),
        click.option("--r-i", type=int, default=None, help="Keywords per document (new index)."),
        click.option("--max-frags", type=int, default=None, help="Fragments kept (new index)."),
        click.option(
            "--keyword-defaults",
            default=None,
            help='Default keyword options of a new index as JSON, e.g. \'{"text": "merge", '
            "\"r_i\": 5}' (default: the screen defaults; a query's own options win).",
        ),
        click.option(
            "--fields",
            "fields_file",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            default=None,
            help="CSV or JSONL of extra _source fields, keyed by id, path or file_name.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _with_bundle(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--bundle",
        "bundle_dir",
        type=click.Path(path_type=Path, exists=True, file_okay=False),
        required=True,
        help="Encoder bundle directory.",
    )(f)
    return click.option("--device", default="cpu", show_default=True)(f)


def _with_backbone(default_k: int | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--backbone and --k of the image sources: required with a fixed k (Karpathy), or taken
    from what the bundle records (default_k None: an image folder)."""
    recorded = default_k is None

    def add(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option(
            "--k",
            "k",
            type=int,
            default=default_k,
            show_default=not recorded,
            help="Regions per image" + (" (default: the bundle's)." if recorded else "."),
        )(f)
        return click.option(
            "--backbone",
            type=click.Path(path_type=Path, exists=True, file_okay=False),
            required=not recorded,
            default=None,
            help="Local Hugging Face vision model directory (config, safetensors, "
            "preprocessor)" + ("; default: the one the bundle records." if recorded else "."),
        )(f)

    return add


def _run(
    source: Any, target: str, bundle: tuple[Path, str] | None, kw: dict[str, Any], **extra: Any
) -> None:
    """Check the target, then load the bundle (bundle: its directory and device) and run."""
    es = EsOptions(
        sidecar=kw.pop("sidecar"),
        fragments=kw.pop("es_fragments"),
        api_key=kw.pop("es_api_key") or None,  # an empty variable (ISR_ES_API_KEY=) means none
    )
    check_target(target, es)  # before a bundle is loaded for nothing
    as_json = kw.pop("as_json")
    fields_file = kw.pop("fields_file")
    if fields_file is not None:
        from isr.ingest.fields import WithFields, read_fields

        source = WithFields(source, read_fields(fields_file))
    # a caption gallery records the caption defaults (presets.SCREEN_DEFAULTS_TEXT)
    kw["keywords"] = keyword_defaults(
        kw.pop("keyword_defaults"), modality=getattr(source, "modality", "image")
    )
    if bundle is not None:  # recorded in the index: `isr serve` loads each index's own bundle
        extra["bundle_path"] = str(bundle[0].resolve())
    opt = IngestOptions(progress=not kw.pop("no_progress"), es=es, **kw, **extra)
    b = Bundle.load(bundle[0], device=bundle[1]) if bundle is not None else None
    report = load_gallery(source, target, b, opt)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.summary())
    if fields_file is not None and source.unmatched():
        click.echo(f"fields: {source.unmatched()} row(s) of {fields_file} matched no document")


@click.group("load", cls=_Group)
@click.option("--threads", type=int, default=None, help="CPU threads for torch and FAISS.")
def main(threads: int | None) -> None:
    """Stream a gallery into an isr index (resumable; idempotent by document id)."""
    if threads is not None:
        set_threads(threads)


@main.command()
@click.argument("data_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--split", required=True, help="Split name: {split}_ims.npy, {split}_caps.txt.")
@click.option("--id-prefix", default="", help="Prefix of the ids (image index in the split).")
@_with_bundle
@_common
def precomp(
    data_dir: Path,
    split: str,
    id_prefix: str,
    bundle_dir: Path,
    device: str,
    target: str,
    **kw: Any,
) -> None:
    """SCAN precomp region features (DATA_DIR/{split}_ims.npy) or the synthetic world."""
    source = PrecompSource(data_dir, split, id_prefix)
    _run(source, target, (bundle_dir, device), kw)


@main.command()
@click.argument("json_path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--images",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="The image folder.",
)
@click.option("--split", default="test", show_default=True, help="Split, or 'all'.")
@_with_backbone(default_k=32)
@_with_bundle
@_common
def karpathy(
    json_path: Path,
    images: Path,
    backbone: Path,
    split: str,
    k: int,
    bundle_dir: Path,
    device: str,
    target: str,
    **kw: Any,
) -> None:
    """Images listed in a Karpathy split JSON, through a local vision backbone."""
    source = KarpathySource(json_path, images, ImageBackbone.load(backbone, k, device), split)
    _run(source, target, (bundle_dir, device), kw)


@main.command()
@click.argument("image_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_with_backbone(default_k=None)
@click.option(
    "--min-side", type=int, default=16, show_default=True, help="Skip smaller images (px)."
)
@_with_bundle
@_common
def images(
    image_dir: Path,
    backbone: Path | None,
    k: int | None,
    min_side: int,
    bundle_dir: Path,
    device: str,
    target: str,
    **kw: Any,
) -> None:
    """A folder of photos (recursive; JPEG, PNG, WebP, GIF, BMP), through a local backbone."""
    from isr.ingest.image_backbone import ImageBackbone
    from isr.ingest.images import ImageFolderSource, backbone_for

    path, k = backbone_for(bundle_dir, backbone, k)
    source = ImageFolderSource(image_dir, ImageBackbone.load(path, k, device), min_side)
    _run(source, target, (bundle_dir, device), kw)


@main.command()
@click.argument("path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["lines", "tsv"]), default="lines", show_default=True
)
@click.option("--per-image", type=int, default=None, help="lines: ids image#k, k < N.")
@click.option("--id-prefix", default="")
@_with_bundle
@_common
def captions(
    path: Path,
    fmt: str,
    per_image: int | None,
    id_prefix: str,
    bundle_dir: Path,
    device: str,
    target: str,
    **kw: Any,
) -> None:
    """A text gallery (image -> text search): one document per caption line."""
    source = CaptionSource(path, fmt, per_image, id_prefix)
    _run(source, target, (bundle_dir, device), kw)


@main.command()
@click.argument("path", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--modality", type=click.Choice(["image", "text"]), default="image", show_default=True
)
@click.option(
    "--fingerprint", default="", help="Fingerprint of the bundle that encoded the features."
)
@_common
def encoded(path: Path, modality: str, fingerprint: str, target: str, **kw: Any) -> None:
    """Features encoded elsewhere (JSONL or Parquet): indexing only, no bundle."""
    _run(EncodedFileSource(path, modality), target, None, kw, fingerprint=fingerprint)


if __name__ == "__main__":
    main()
