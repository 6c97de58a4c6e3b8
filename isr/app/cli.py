"""The `isr` command line. Each command parses arguments, builds a config and calls one
library function; errors of isr's own kinds become a one-line message and exit status 2.

Entry point: :func:`main` (console script `isr`).
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from isr.errors import InvalidInput, IsrError

__all__ = ["main"]


def _index_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An Elasticsearch index name, checked where it enters (the engine's one rule)."""
    from isr.plugin.config import index_name_problem

    why = index_name_problem(value)
    if why:
        raise click.BadParameter(f"{value!r}: {why}", ctx, param)
    return value


class IsrGroup(click.Group):
    """A command group whose isr errors become one-line messages; commands listed in `lazy`
    are imported on first use."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lazy: dict[str, tuple[str, str]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name][0].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy and name not in self.commands:
                rows.append((name, self.lazy[name][1]))
            else:
                cmd = self.get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IsrError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e


@click.group(cls=IsrGroup)
@click.version_option(package_name="isr")
@click.option(
    "--threads",
    type=int,
    default=None,
    help="CPU threads for torch and FAISS (default: all cores).",
)
def main(threads: int | None) -> None:
    """isr: text-to-image search with late interaction and keyword pre-screening."""
    if threads is not None:
        from isr.app.runtime import set_threads  # torch and FAISS: only when asked

        set_threads(threads)


@main.group(cls=IsrGroup)
def index() -> None:
    """Create, inspect or delete an embedded index."""


@index.command("create")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="The encoder bundle that will fill it: its dims, fingerprint and directory are "
    "recorded (then `isr load ... --bundle` fills it and `isr serve` finds the bundle).",
)
@click.option(
    "--fingerprint",
    default=None,
    help="Fingerprint of the bundle that encoded the features to load (`isr load encoded "
    "--fingerprint`); default: none.",
)
@click.option("--d-fast", type=int, default=None, help="Dims of the fast vector (or --bundle).")
@click.option("--d-frag", type=int, default=None, help="Dims of a fragment (or --bundle).")
@click.option(
    "--max-frags",
    type=int,
    default=None,
    help="Fragments kept per document (1-64; default: the bundle's, else 32).",
)
@click.option(
    "--codec", type=click.Choice(["fp32", "fp16", "sq8"]), default="fp16", show_default=True
)
@click.option(
    "--modality", type=click.Choice(["image", "text"]), default="image", show_default=True
)
@click.option(
    "--r-i",
    type=int,
    default=None,
    help="Keywords stored per document (default: the bundle's top_keywords, else 15).",
)
@click.option("--hnsw-m", type=int, default=16, show_default=True)
@click.option("--ef-construction", type=int, default=100, show_default=True)
@click.option(
    "--fast-storage", type=click.Choice(["flat", "sq8"]), default="flat", show_default=True
)
@click.option(
    "--keyword-defaults",
    default=None,
    help='Default keyword options as JSON, e.g. \'{"text": "merge", "rule": "cost", "r_i": 5}\' '
    "(default: the screen defaults); a query's own options win.",
)
def index_create(path: Path, bundle_dir: Path | None, fingerprint: str | None, **kw: Any) -> None:
    """Create an empty index at PATH (for a bundle: --bundle DIR)."""
    from isr.app.presets import keyword_defaults
    from isr.plugin import EmbeddedIndex, IndexConfig

    dims = {"d_fast": kw["d_fast"], "d_frag": kw["d_frag"]}
    max_frags, r_i, bundle_path = kw["max_frags"] or 32, kw["r_i"] or 15, ""
    if bundle_dir is not None:
        from isr.encoders.bundle import Bundle

        if fingerprint is not None:
            raise InvalidInput("give --bundle DIR or --fingerprint FP, not both")
        bundle = Bundle.load(bundle_dir, device="cpu")
        have = {"d_fast": bundle.d_fast, "d_frag": bundle.d_frag}
        bad = [f"--{k.replace('_', '-')} {v}" for k, v in dims.items() if v not in (None, have[k])]
        if bad:
            raise InvalidInput(
                f"{', '.join(bad)} contradicts the bundle (d_fast {bundle.d_fast}, d_frag "
                f"{bundle.d_frag}): leave them out with --bundle"
            )
        if kw["max_frags"] is not None and kw["max_frags"] < bundle.max_frags:
            raise InvalidInput(
                f"--max-frags {kw['max_frags']} is below the bundle's {bundle.max_frags}: its "
                "items would not fit"
            )
        dims, fingerprint = have, bundle.fingerprint
        max_frags = kw["max_frags"] or bundle.max_frags
        r_i = kw["r_i"] or bundle.cfg.top_keywords
        bundle_path = str(bundle_dir.resolve())
    missing = [f"--{k.replace('_', '-')}" for k, v in dims.items() if v is None]
    if missing:
        raise InvalidInput(f"give {' and '.join(missing)}, or --bundle DIR (its dims)")
    config = IndexConfig(
        d_fast=dims["d_fast"],
        d_frag=dims["d_frag"],
        max_frags=max_frags,
        codec=kw["codec"],
        modality=kw["modality"],
        r_i=r_i,
        hnsw_m=kw["hnsw_m"],
        hnsw_ef_construction=kw["ef_construction"],
        fast_storage=kw["fast_storage"],
        keywords=keyword_defaults(kw["keyword_defaults"], modality=kw["modality"]),
        bundle_fingerprint=fingerprint or "",
        bundle_path=bundle_path,
    )
    EmbeddedIndex.create(path, config).close()
    click.echo(f"created {path}" + (f" for bundle {fingerprint[:12]}..." if fingerprint else ""))


@index.command("stats")
@click.argument("path", type=click.Path(path_type=Path))
def index_stats(path: Path) -> None:
    """Print the statistics of the index at PATH as JSON."""
    from isr.plugin import EmbeddedIndex

    with EmbeddedIndex.open(path, readonly=True) as idx:
        click.echo(json.dumps(idx.stats(), indent=2))


@index.command("check")
@click.argument("path", type=click.Path(path_type=Path))
def index_check(path: Path) -> None:
    """Verify the index at PATH in full (checksums, sqlite, term ids); exit 1 on a problem."""
    from isr.plugin.embedded.index import EmbeddedIndex

    report = EmbeddedIndex.check(path)
    click.echo(json.dumps(report, indent=2))
    if not report["ok"]:
        raise SystemExit(1)


@index.command("compact")
@click.argument("path", type=click.Path(path_type=Path))
def index_compact(path: Path) -> None:
    """Rewrite the index at PATH with its live documents only (drops replaced/deleted rows)."""
    from isr.plugin.embedded.index import EmbeddedIndex

    click.echo(json.dumps(EmbeddedIndex.compact(path), indent=2))


@index.command("delete")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def index_delete(path: Path, yes: bool) -> None:
    """Delete the index at PATH (the whole directory)."""
    from isr.plugin import EmbeddedIndex

    if not yes:
        click.confirm(f"delete the index at {path}?", abort=True)
    EmbeddedIndex.destroy(path)
    click.echo(f"deleted {path}")


# search's keyword flags -> KeywordOptions fields; a flag left out takes the index's default
_KEYWORD_FLAGS = {
    "r_t": "r_t", "mode": "mode", "minimum_should_match": "minimum_should_match",
    "kw_text": "text", "rule": "rule", "alpha": "alpha", "p_min": "p_min", "mass": "mass",
    "stop_share": "stop", "r_i": "r_i", "miss": "miss", "gain": "gain", "scale": "scale",
}  # fmt: skip


def _keyword_flags(kw: dict[str, Any]) -> dict[str, Any]:
    return {f: kw[flag] for flag, f in _KEYWORD_FLAGS.items() if kw.get(flag) is not None}


@main.command("search")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--query",
    "query_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Encoded query (.json or .npz).",
)
@click.option("--text", "query_text", default=None, help="A text query, encoded with --bundle.")
@click.option(
    "--image",
    "query_image",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="An image query (image -> text or image -> image), through --bundle's backbone.",
)
@click.option(
    "--bundle",
    "bundle_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Encoder bundle directory (with --text or --image).",
)
@click.option("--size", type=int, default=10, show_default=True)
@click.option("--num-candidates", type=int, default=1000, show_default=True)
@click.option("--rerank-window", type=int, default=200, show_default=True)
@click.option(
    "--r-t", type=int, default=None, help="Query keywords used by the screen (the paper's R_T)."
)
@click.option("--mode", type=click.Choice(["any", "all", "minimum_should_match"]), default=None)
@click.option("--minimum-should-match", type=int, default=None)
@click.option(
    "--kw-text",
    type=click.Choice(["pred", "ext", "merge"]),
    default=None,
    help="A text query's labels: predicted, its nouns, or both.",
)
@click.option("--rule", type=click.Choice(["top", "cost"]), default=None, help="Label choice.")
@click.option("--alpha", type=float, default=None, help="Cost rule: weight of a label's share.")
@click.option("--p-min", type=float, default=None, help="Leave out labels below this probability.")
@click.option("--mass", type=float, default=None, help="Stop at this cumulative probability.")
@click.option("--stop-share", type=float, default=None, help="Never use labels above this share.")
@click.option("--r-i", type=int, default=None, help="Stored labels per document that count.")
@click.option("--miss", type=float, default=None, help="Stop once prod(1 - p) is at most this.")
@click.option(
    "--gain",
    type=float,
    default=None,
    help="Take a further label only while its added kept chance per admitted share is >= this.",
)
@click.option(
    "--scale", type=float, default=None, help="Multiply the query's label probabilities by this."
)
@click.option(
    "--ablation",
    type=click.Choice(
        ["fast", "keywords+fast", "full", "fast+rerank", "exhaustive", "keywords+exhaustive"]
    ),
    default="full",
    show_default=True,
)
@click.option(
    "--filter",
    "filter_json",
    default=None,
    help="Elasticsearch filter DSL as JSON (term, terms, range, bool).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--save-query",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the encoded query as JSON (for --query FILE, ext.isr.query_encoded).",
)
def search_cmd(
    path: Path,
    query_file: Path | None,
    query_text: str | None,
    query_image: Path | None,
    bundle_dir: Path | None,
    filter_json: str | None,
    as_json: bool,
    save_query: Path | None,
    **kw: Any,
) -> None:
    """Search the index at PATH with a text query (--text, --bundle) or an encoded one (--query)."""
    from isr.eval.report import markdown_table
    from isr.plugin import EmbeddedIndex, KeywordOptions, SearchOptions, search
    from isr.plugin.http.queryfile import load_query

    try:
        filt = json.loads(filter_json) if filter_json else None
    except json.JSONDecodeError as e:
        raise InvalidInput(f"--filter: not valid JSON ({e})") from e
    from isr.plugin.http.shapes import check_size

    size = check_size(kw["size"], "--size")
    options = SearchOptions.for_ablation(
        kw["ablation"],
        size=max(size, 1),  # --size 0: only the total, as over HTTP
        num_candidates=kw["num_candidates"],
        rerank_window=kw["rerank_window"],
        keywords=KeywordOptions.partial(_keyword_flags(kw), "keyword option"),
        filter=filt,
    )
    if sum(x is not None for x in (query_file, query_text, query_image)) != 1:
        raise InvalidInput("give exactly one of --query FILE and --text TEXT, or --image FILE")
    with EmbeddedIndex.open(path, readonly=True) as idx:
        if query_image is not None:
            from isr.app.image_query import image_query

            query = image_query(idx, bundle_dir, query_image)
        elif query_text is not None:
            from isr.app.serve import encode_query_text  # torch + the bundle: --text only

            query = encode_query_text(idx.config, bundle_dir, query_text)
        else:
            assert query_file is not None
            query = load_query(query_file)
        result = search(idx, query, options)
    if save_query is not None:
        from isr.plugin.http.queryfile import query_to_json

        save_query.write_text(json.dumps(query_to_json(query)) + "\n")
    if size == 0:
        from dataclasses import replace

        result = replace(result, hits=())
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
        return
    rows = [
        [
            h.id,
            h.score,
            h.fast_score,
            h.maxsim_score if h.maxsim_score is not None else "-",
            ",".join(h.keywords_matched),
        ]
        for h in result.hits
    ]
    click.echo(markdown_table(["id", "score", "fast", "max-sim", "keywords matched"], rows, 4))
    p = result.profile
    click.echo(
        "; ".join(f"{s.name}: {s.ms:.2f} ms, {s.count}" for s in p.stages)
        + f"; total {p.took_ms:.2f} ms"
    )
    if p.relaxed:
        click.echo(f"keyword filter relaxed: {p.relax_reason}")


@main.command("demo")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo"), show_default=True)
@click.option(
    "--queries",
    type=int,
    default=200,
    show_default=True,
    help="Queries per direction in the evaluation.",
)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(workdir: Path, queries: int, seed: int) -> None:
    """The main job: world -> bundle -> index -> text queries -> evaluation -> HTTP."""
    from isr.app.demo import run_demo

    run_demo(workdir, seed=seed, queries=queries)


@main.command("world")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--train", "n_train", type=int, default=10_000, show_default=True)
@click.option("--dev", "n_dev", type=int, default=1_000, show_default=True)
@click.option("--test", "n_test", type=int, default=1_000, show_default=True)
@click.option("--regions", "m", type=int, default=32, show_default=True, help="Regions per image.")
@click.option("--feature-dim", "dim", type=int, default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--noise",
    type=float,
    default=1.0,
    show_default=True,
    help="Region noise norm relative to a unit prototype (harder above 1).",
)
@click.option(
    "--near-duplicates",
    type=float,
    default=0.03,
    show_default=True,
    help="Share of images copying an earlier scene with one change (0-0.5).",
)
@click.option(
    "--paraphrase",
    type=float,
    default=1.0,
    show_default=True,
    help="Share of words drawn from all synonyms, else the first word (0-1; 0 is easiest).",
)
@click.option("--overwrite", is_flag=True)
def world(
    out_dir: Path,
    n_train: int,
    n_dev: int,
    n_test: int,
    m: int,
    dim: int,
    seed: int,
    noise: float,
    near_duplicates: float,
    paraphrase: float,
    overwrite: bool,
) -> None:
    """Write a seeded synthetic world (SCAN precomp layout) to OUT_DIR; --noise,
    --near-duplicates and --paraphrase set how hard it is (recorded in world.json)."""
    from isr.ingest.synthetic_world import generate_world

    info = generate_world(
        out_dir, n_train, n_dev, n_test, seed=seed, m=m, D=dim, noise=noise,
        near_duplicates=near_duplicates, paraphrase=paraphrase, overwrite=overwrite,
    )  # fmt: skip
    click.echo(f"wrote {info.sizes} images to {info.out_dir} ({info.n_bytes / 1e9:.2f} GB)")


@main.command("train")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Dataset in SCAN precomp layout (or --images with --captions).",
)
@click.option(
    "--images",
    "image_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A folder of photos: features extracted once into OUT/features with --image-backbone.",
)
@click.option(
    "--captions",
    "captions_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --images: CSV/JSONL of captions keyed by path or file_name ('caption' column).",
)
@click.option(
    "--image-backbone",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="With --images: local Hugging Face vision model directory (recorded in the bundle).",
)
@click.option("--k", "k", type=int, default=16, show_default=True, help="With --images: regions.")
@click.option(
    "--preset",
    type=click.Choice(["tiny", "small", "paper"]),
    default=None,
    help="Settings: tiny (minutes on 2 cores), small, paper (the papers'); --config overrides.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Run directory (stages + bundle).",
)
@click.option(
    "--recipe",
    type=click.Choice(["paper", "plain"]),
    default=None,
    help="paper: I -> B -> F; plain: B and F without distillation.",
)
@click.option(
    "--stage",
    type=click.Choice(["inflate", "shrink-base", "shrink-fast", "base", "fast"]),
    default=None,
    help="One stage instead of a recipe.",
)
@click.option(
    "--teacher",
    type=click.Path(path_type=Path),
    default=None,
    help="Teacher stage directory (shrink stages).",
)
@click.option("--train-split", default="train", show_default=True)
@click.option("--val-split", default="dev", show_default=True)
@click.option(
    "--min-images", type=int, default=100, show_default=True, help="Keyword vocabulary threshold."
)
@click.option("--limit", type=int, default=None, help="Use the first N training images.")
@click.option(
    "--backbone",
    default=None,
    help="Local HF checkpoint dir, or 'minilm' for the packaged all-MiniLM-L6-v2.",
)
@click.option(
    "--config",
    "config_json",
    default=None,
    help="TrainConfig fields as JSON, e.g. '{\"epochs\": 5}'.",
)
def train(
    data_dir: Path | None,
    image_dir: Path | None,
    captions_file: Path | None,
    image_backbone: Path | None,
    k: int,
    preset: str | None,
    out_dir: Path,
    recipe: str | None,
    stage: str | None,
    teacher: Path | None,
    train_split: str,
    val_split: str,
    min_images: int,
    limit: int | None,
    backbone: str | None,
    config_json: str | None,
) -> None:
    """Train Inflate-and-Shrink encoders with keyword heads; writes OUT/bundle for a recipe."""
    from isr.app.presets import estimate_seconds, json_object, stage_table, train_fields
    from isr.encoders.backbone import minilm_path
    from isr.encoders.train import TrainConfig, run_recipe, train_stage
    from isr.eval.report import markdown_table
    from isr.ingest.training_data import load_paired

    if (recipe is None) == (stage is None):
        raise InvalidInput("give exactly one of --recipe and --stage")
    if (data_dir is None) == (image_dir is None):
        raise InvalidInput("give exactly one of --data DIR and --images DIR")
    fields = train_fields(preset, json_object(config_json, "--config", "training settings"))
    if backbone is not None:
        fields["backbone"] = str(minilm_path()) if backbone == "minilm" else backbone
    cfg = TrainConfig.from_dict(fields)
    if image_dir is not None:
        data_dir = _extract(image_dir, captions_file, image_backbone, k, out_dir)
    assert data_dir is not None
    if val_split == train_split:
        raise InvalidInput(
            f"--val-split {val_split!r} is the training split: validate on a split the model "
            "never trains on (e.g. --train-split train --val-split dev)"
        )
    data, vocab = load_paired(data_dir, train_split, min_images=min_images, limit=limit)
    val, _ = load_paired(data_dir, val_split, vocab=vocab)
    click.echo(
        f"validation: per-epoch recall on the {len(val)} images of the {val_split!r} split "
        f"(never trained on); training on {train_split!r}"
    )
    command = " ".join(sys.argv)
    n, m, d_in = data.images.shape
    est = estimate_seconds(cfg, n, m, d_in, recipe or "plain", len(vocab.labels))
    click.echo(
        f"training {n} images ({m} regions x {d_in}), {cfg.epochs} epochs per stage, "
        f"recipe {recipe or stage}: estimated {_dur(est)} of training steps here"
    )
    if recipe is not None:
        t0 = time.perf_counter()
        out = run_recipe(recipe, cfg, data, out_dir, vocab=vocab, val=val, command=command)  # type: ignore[arg-type]
        _record_eyes(data_dir, out, d_in)
        rows = stage_table(out_dir)
        if rows:
            head = ["stage", "epochs", "train s", "T->I R@1 %", "R@5", "R@10", "I->T R@1 %", "R@5",
                    "R@10"]  # fmt: skip
            click.echo(markdown_table(head, rows, 1))
        click.echo(f"took {_dur(time.perf_counter() - t0)} (estimated {_dur(est)})")
        click.echo(f"bundle: {out}")
    else:
        out = train_stage(
            stage or "",
            cfg,
            data,
            out_dir,
            vocab=vocab,
            teacher_dir=teacher,
            val=val,
            command=command,
        )
        click.echo(f"stage checkpoint: {out}")


def _dur(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _extract(
    image_dir: Path, captions_file: Path | None, image_backbone: Path | None, k: int, out: Path
) -> Path:
    """`isr train --images`: the photos' region features, extracted once into OUT/features."""
    from isr.errors import InvalidInput
    from isr.ingest.extract import extract_precomp
    from isr.ingest.image_backbone import ImageBackbone

    if captions_file is None or image_backbone is None:
        raise InvalidInput("--images needs --captions FILE and --image-backbone DIR")
    got = extract_precomp(
        image_dir, captions_file, ImageBackbone.load(image_backbone, k), Path(out) / "features"
    )
    click.echo(
        f"features: {got.sizes} images in {got.out_dir}"
        + (" (reused)" if got.reused else "")
        + (f"; {got.uncaptioned} without a caption left out" if got.uncaptioned else "")
        + (f"; {got.unreadable} unreadable left out" if got.unreadable else "")
    )
    return got.out_dir


def _record_eyes(data_dir: Path, bundle_dir: Path, d_in: int) -> None:
    """The bundle records the eyes its features came from: the data's record (features
    extracted by isr), else precomputed regions of unknown origin ("none")."""
    from isr.encoders.eyes import Eyes, read_eyes, write_eyes

    write_eyes(bundle_dir, read_eyes(data_dir) or Eyes(kind="none", feature_dim=d_in))


@main.command("serve")
@click.option("--root", type=click.Path(path_type=Path), help="Embedded mode: index directories.")
@click.option("--es-url", default=None, help="Elasticsearch mode: the cluster to front.")
@click.option("--sidecar-root", type=click.Path(path_type=Path), help="Sidecars, one per index.")
@click.option(
    "--bundle",
    type=click.Path(path_type=Path),
    help="Encoder bundle for query_text/query_image (default: each index's own, as recorded).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=9280, show_default=True)
@click.option("--api-key", envvar="ISR_API_KEY", default=None, help="Require ApiKey auth.")
@click.option("--es-api-key", envvar="ISR_ES_API_KEY", default=None, help="Key for Elasticsearch.")
@click.option("--max-body-mb", type=float, default=16.0, show_default=True)
@click.option("--device", default=None, help="Scorer/encoder device (default: cuda if present).")
@click.option(
    "--refresh-interval",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds between refreshes of open indexes (new commits become searchable); -1: never.",
)
@click.option("--insecure", is_flag=True, help="Allow a non-loopback --host without an API key.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="A Host name to answer besides the loopback ones (on a loopback bind).",
)
@click.option(
    "--preload/--no-preload",
    default=True,
    show_default=True,
    help="Embedded mode: map each index's vector and fragment files into memory on open "
    "(page faults otherwise land in the first queries that touch each page).",
)
def serve_cmd(max_body_mb: float, **kw: Any) -> None:
    """Serve Elasticsearch's _search shapes over the isr pipeline (see docker/README.md)."""
    from isr.app.serve import serve
    from isr.plugin.http.server import ServerConfig

    for key in ("api_key", "es_api_key"):  # an empty variable (ISR_API_KEY=) means none
        kw[key] = kw[key] or None
    serve(ServerConfig(max_body_bytes=int(max_body_mb * 2**20), **kw))


@main.command("check")
@click.argument("index", callback=_index_name)
@click.option("--es-url", required=True)
@click.option("--es-api-key", envvar="ISR_ES_API_KEY", default=None)
@click.option("--sidecar", type=click.Path(path_type=Path), default=None)
@click.option("--repair", is_flag=True, help="Delete fragments of documents ES does not have.")
@click.option(
    "--delete-missing", is_flag=True, help="With --repair: delete ES documents without fragments."
)
def check_cmd(
    index: str,
    es_url: str,
    es_api_key: str | None,
    sidecar: Path | None,
    repair: bool,
    delete_missing: bool,
) -> None:
    """Compare the ids in Elasticsearch with the ids that have fragments; report and repair."""
    from elasticsearch import Elasticsearch

    from isr.plugin.es.backend import EsBackend

    client = Elasticsearch(es_url, api_key=es_api_key)
    with EsBackend.open(client, index, sidecar, readonly=not repair) as backend:
        report = backend.check(repair=repair, delete_missing=delete_missing)
    out = asdict(report)
    for key in ("missing_fragments", "orphan_fragments"):
        ids = out.pop(key)
        out[key] = len(ids)
        out[key + "_ids"] = list(ids[:100])
    out["consistent"] = report.consistent
    click.echo(json.dumps(out, indent=2))


@main.group("es", cls=IsrGroup)
def es_group() -> None:
    """Create and fill isr indexes in Elasticsearch."""


@es_group.command("create")
@click.argument("index", callback=_index_name)
@click.option("--es-url", required=True)
@click.option("--es-api-key", envvar="ISR_ES_API_KEY", default=None)
@click.option("--d-fast", type=int, required=True)
@click.option("--d-frag", type=int, required=True)
@click.option("--max-frags", type=int, default=32, show_default=True)
@click.option(
    "--codec", type=click.Choice(["fp32", "fp16", "sq8"]), default="fp16", show_default=True
)
@click.option("--r-i", type=int, default=15, show_default=True)
@click.option("--bundle-fingerprint", default="", help="Fingerprint of the bundle that fills it.")
@click.option(
    "--vector-index",
    type=click.Choice(["int8_hnsw", "bbq_hnsw", "hnsw", "int8_flat"]),
    default="int8_hnsw",
    show_default=True,
)
@click.option("--m", type=int, default=16, show_default=True)
@click.option("--ef-construction", type=int, default=100, show_default=True)
@click.option(
    "--fragments",
    type=click.Choice(["sidecar", "rank_vectors"]),
    default="sidecar",
    show_default=True,
)
@click.option("--sidecar", type=click.Path(path_type=Path), default=None)
@click.option("--shards", type=int, default=None)
@click.option("--replicas", type=int, default=None)
def es_create(
    index: str, es_url: str, es_api_key: str | None, sidecar: Path | None, **kw: Any
) -> None:
    """Create an isr index in Elasticsearch (and its sidecar directory)."""
    from elasticsearch import Elasticsearch

    from isr.plugin import IndexConfig
    from isr.plugin.es.backend import EsBackend
    from isr.plugin.es.mapping import EsLayout

    config = IndexConfig(
        d_fast=kw["d_fast"],
        d_frag=kw["d_frag"],
        max_frags=kw["max_frags"],
        codec=kw["codec"],
        r_i=kw["r_i"],
        bundle_fingerprint=kw["bundle_fingerprint"],
    )
    layout = EsLayout(
        vector_index=kw["vector_index"],
        m=kw["m"],
        ef_construction=kw["ef_construction"],
        fragments=kw["fragments"],
        shards=kw["shards"],
        replicas=kw["replicas"],
    )
    client = Elasticsearch(es_url, api_key=es_api_key)
    EsBackend.create(client, index, config, layout, sidecar).close()
    click.echo(f"created {index} ({layout.vector_index}, fragments in {layout.fragments})")


@es_group.command("load-synthetic")
@click.argument("index", callback=_index_name)
@click.option("--es-url", required=True)
@click.option("--es-api-key", envvar="ISR_ES_API_KEY", default=None)
@click.option("--sidecar", type=click.Path(path_type=Path), default=None)
@click.option("--docs", "n_docs", type=int, default=20_000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def es_load_synthetic(
    index: str, es_url: str, es_api_key: str | None, sidecar: Path | None, n_docs: int, seed: int
) -> None:
    """Fill an isr index in Elasticsearch with the seeded synthetic encoded gallery."""
    from elasticsearch import Elasticsearch

    from isr.ingest.encoded_world import load_encoded_world
    from isr.plugin.es.backend import EsBackend

    client = Elasticsearch(es_url, api_key=es_api_key)
    with EsBackend.open(client, index, sidecar, readonly=False) as backend:
        sent = load_encoded_world(backend, n_docs, seed=seed)
    click.echo(f"indexed {sent} documents into {index}")


# commands defined in their own modules, imported when used (`isr --help` stays fast): name ->
# (module:attribute, the short help `isr --help` shows without importing them)
main.lazy = {
    "load": ("isr.app.load:main", "Stream a gallery into an isr index (resumable)."),
    "eval": ("isr.app.eval_cli:eval_group", "Evaluations (TREC-style, Table 2), benchmarks."),
    "bench": ("isr.app.eval_cli:bench", "The scale benchmark (10K/100K/1M galleries)."),
}

assert isinstance(index, IsrGroup)
index.lazy = {
    "calibrate-screen": (
        "isr.app.screen_cli:calibrate_screen_cmd",
        "Measure the screen's scale and gain on a labelled split; record them.",
    ),
}

if __name__ == "__main__":
    main()
