"""TREC runs, recall per pipeline configuration and the screening trade-off for one split.

Run: ``isr eval trec --data runs/world10k --split test --bundle B --out OUT`` (or
``python eval/run_trec_style.py ...``, the same command). This file only parses arguments and calls :func:`isr.eval.trec_style.evaluate`; see that module
for what is measured and the files written under OUT (report.md, report.json, sweep.png, the
run files and qrels).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from isr.app.runtime import set_threads
from isr.errors import InvalidInput, IsrError
from isr.eval.trec_style import TrecStyleConfig, evaluate
from isr.plugin.pipeline import KeywordOptions

CONFIG_NAMES = ("fast", "keywords+fast", "full", "fast+rerank", "exhaustive", "keywords+exhaustive")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from e


@click.command("trec", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Dataset folder in the precomp layout ({split}_ims.npy, {split}_caps.txt).",
)
@click.option("--split", default="test", show_default=True)
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for the report, run files, qrels and built indexes.",
)
@click.option(
    "--image-index",
    type=click.Path(path_type=Path),
    default=None,
    help="Image gallery index (t2i); built when absent. Default OUT/indexes/images-riN.",
)
@click.option(
    "--text-index",
    type=click.Path(path_type=Path),
    default=None,
    help="Caption gallery index (i2t); built when absent.",
)
@click.option("--directions", default="t2i,i2t", show_default=True)
@click.option(
    "--configs",
    default=",".join(CONFIG_NAMES),
    show_default=True,
    help="Pipeline ablations (exhaustive always runs: the speed-up reference).",
)
@click.option("--r-i", type=int, default=15, show_default=True, help="R_I of a built index.")
@click.option("--r-t", type=int, default=3, show_default=True, help="R_T of the configurations.")
@click.option("--r-i-sweep", default="5,10,15", show_default=True)
@click.option("--r-t-sweep", default="1,2,3,5", show_default=True)
@click.option("--sweep-config", default="keywords+exhaustive", show_default=True)
@click.option(
    "--sweep-directions",
    default="t2i",
    show_default=True,
    help="Directions of the sweep ('' for none).",
)
@click.option("--depth", type=int, default=10, show_default=True, help="Hits per query.")
@click.option("--num-candidates", type=int, default=1000, show_default=True)
@click.option("--rerank-window", type=int, default=200, show_default=True)
@click.option("--max-queries", type=int, default=None, help="A seeded sample of the queries.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--title", default="", help="Names the benchmark in the report.")
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="torch and FAISS threads (one per process on a shared machine).",
)
@click.option(
    "--keywords",
    "keywords_json",
    default="{}",
    help='KeywordOptions fields for the screened runs as JSON, e.g. \'{"text": "merge", '
    '"rule": "cost", "alpha": 0.5}\' (r_t and r_i come from --r-t / --r-i and the sweeps).',
)
@click.option("--no-progress", is_flag=True)
def main(
    data_dir: Path,
    split: str,
    bundle_dir: Path,
    out_dir: Path,
    image_index: Path | None,
    text_index: Path | None,
    directions: str,
    configs: str,
    r_i: int,
    r_t: int,
    r_i_sweep: str,
    r_t_sweep: str,
    sweep_config: str,
    sweep_directions: str,
    depth: int,
    num_candidates: int,
    rerank_window: int,
    max_queries: int | None,
    seed: int,
    title: str,
    threads: int,
    keywords_json: str,
    no_progress: bool,
) -> None:  # fmt: skip
    """Evaluate text -> image and image -> text retrieval of every pipeline configuration."""

    def names(text: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in text.split(",") if x.strip())

    try:
        set_threads(threads)
        try:
            kw = json.loads(keywords_json)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"--keywords: not JSON ({e})") from e
        if not isinstance(kw, dict):
            raise InvalidInput("--keywords: expected a JSON object")
        known = set(KeywordOptions.__dataclass_fields__) - {"r_t", "r_i"}
        if set(kw) - known:
            raise InvalidInput(f"--keywords: unknown fields {sorted(set(kw) - known)}")
        cfg = TrecStyleConfig(
            data_dir=data_dir, split=split, bundle_dir=bundle_dir, out_dir=out_dir,
            image_index=image_index, text_index=text_index, directions=names(directions),
            configs=names(configs), r_i=r_i, r_t=r_t, r_i_sweep=_ints(r_i_sweep),
            r_t_sweep=_ints(r_t_sweep), sweep_config=sweep_config,
            sweep_directions=names(sweep_directions), depth=depth,
            num_candidates=num_candidates, rerank_window=rerank_window,
            max_queries=max_queries, seed=seed, title=title, command=" ".join(sys.argv),
            progress=not no_progress, keywords=KeywordOptions(**kw),
        )  # fmt: skip
        report = evaluate(cfg)
    except IsrError as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from e
    click.echo(Path(report.files["report.md"]).read_text(encoding="utf-8"))
    for name, path in report.files.items():
        click.echo(f"{name}: {path}", err=True)
