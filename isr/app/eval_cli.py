"""The evaluation and benchmark commands: ``isr eval trec|table2|appendix|make-caption-images|
bench-ingest|bench-facade|bench-maxsim`` and ``isr bench`` (each also ``python eval/<name>.py``,
the same command with the same options).

Each command parses its options, sets the threads and calls one library function of
:mod:`isr.eval`; errors of isr's own kinds become a one-line message and exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from isr.app.bench_facade import main as bench_facade
from isr.app.make_caption_images import main as make_caption_images
from isr.app.presets import json_object
from isr.app.runtime import set_threads
from isr.app.screen_cli import screen_curve_cmd, train_heads_cmd
from isr.app.trec import main as trec
from isr.encoders.train import TrainConfig
from isr.errors import IsrError
from isr.eval import bench_ingest as ingest_bench
from isr.eval import bench_maxsim as maxsim_bench
from isr.eval.appendix import TABLES as APPENDIX_TABLES
from isr.eval.appendix import (
    evaluate_appendix,
    format_appendix,
    plot_interactions,
    train_appendix,
)
from isr.eval.bench import ScaleConfig, report, run, run_peer_sizes, sweep_point
from isr.eval.report import markdown_table
from isr.eval.table2 import (
    CAPTION_ORDER,
    CHAINS,
    ROWS,
    format_tables,
    run_caption_table2,
    run_table2,
)
from isr.ingest.training_data import load_paired

__all__ = [
    "appendix",
    "bench",
    "bench_facade",
    "bench_ingest",
    "bench_maxsim",
    "eval_group",
    "make_caption_images",
    "table2",
    "trec",
]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IsrError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e


@click.command(
    "bench",
    help="The scale benchmark: builds or reuses synthetic galleries of each size under "
    "--workdir, measures build rate, bytes per item, per-stage latency of every ablation, "
    "exhaustive max-sim, a flat-IP baseline and the max-sim kernel, and writes bench.md, "
    "bench.json and latency_vs_size.png to --out (details: eval/bench.py).",
)
@click.option("--sizes", default="10000,100000,1000000", show_default=True)
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("runs/bench"), show_default=True
)
@click.option("--codec", default="sq8", show_default=True, help="Fragment codec of the galleries.")
@click.option("--fast-storage", default="sq8", show_default=True)
@click.option("--hnsw-m", type=int, default=16, show_default=True)
@click.option("--ef-construction", type=int, default=100, show_default=True)
@click.option("--queries", type=int, default=200, show_default=True)
@click.option("--exhaustive-queries", type=int, default=10, show_default=True)
@click.option("--num-candidates", type=int, default=1000, show_default=True)
@click.option("--rerank-window", type=int, default=200, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="Per-query threads.")
@click.option(
    "--exhaustive-workers",
    type=int,
    default=0,
    help="Threads an exhaustive scan uses (0: all cores).",
)
@click.option("--build-threads", type=int, default=0, help="0: all cores.")
@click.option("--codec-docs", type=int, default=10_000, show_default=True)
@click.option(
    "--sweep",
    default="",
    help="Extra num_candidates:rerank_window settings for the full pipeline at the largest "
    "size, e.g. 2000:500,4000:1000; NC:RW:exact scans every filter exactly.",
)
@click.option(
    "--peers",
    is_flag=True,
    help="Instead of the scale tables: isr's ablations beside FAISS flat IP + rerank, the "
    "keyword rows + exact + rerank baseline and PLAID (with --plaid-python), round-robin; "
    "writes bench_peers.md/json (details: isr/eval/bench_peers.py).",
)
@click.option(
    "--plaid-python",
    default="",
    envvar="ISR_PLAID_PYTHON",
    help="With --peers: the python of a virtual environment with fast_plaid (it pins its own "
    "torch); PLAID then runs in that process, its index built once under --workdir.",
)
def bench(sizes: str, workdir: Path, out: Path, sweep: str, peers: bool, **kw: Any) -> None:
    try:
        size_list = tuple(int(s) for s in sizes.split(","))
        pairs = tuple(sweep_point(p) for p in sweep.split(",") if p)
    except ValueError as e:
        raise click.BadParameter(
            f"--sizes: comma-separated integers, --sweep: NC:RW[:exact]; got {sizes!r}, {sweep!r}"
        ) from e
    cfg = ScaleConfig(sizes=size_list, sweep=pairs, **kw)
    if peers:
        click.echo(run_peer_sizes(cfg, workdir, out, set_threads))
        click.echo(f"wrote {out / 'bench_peers.md'}, {out / 'bench_peers.json'}")
        return
    res = run(cfg, workdir, out, set_threads)
    click.echo(report(res))
    click.echo(f"wrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'latency_vs_size.png'}")


@click.command("table2")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--out", "run_dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--chain",
    "chains",
    type=click.Choice(CHAINS),
    multiple=True,
    help="Chains to train in this process (default: both).",
)
@click.option("--config", "config_json", default=None, help="TrainConfig fields as JSON.")
@click.option("--val-images", type=int, default=200, show_default=True)
@click.option("--no-eval", is_flag=True, help="Train only.")
@click.option("--eval-only", is_flag=True, help="Train nothing; evaluate finished rows.")
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads.")
@click.option(
    "--total-epochs",
    type=int,
    default=None,
    help="Matched training: every row gets this many epochs in all (teachers' included).",
)
@click.option(
    "--row",
    "rows",
    type=click.Choice(list(ROWS)),
    multiple=True,
    help="With --total-epochs: train only these rows (repeatable; e.g. two processes).",
)
@click.option(
    "--caption-images",
    is_flag=True,
    help="--data is a folder from make-caption-images: train on its training split, score on "
    "the held-out one (needs --total-epochs; rows train cheapest first, each scored when done).",
)
def table2(
    data_dir: Path,
    run_dir: Path,
    chains: tuple[str, ...],
    config_json: str | None,
    val_images: int,
    no_eval: bool,
    eval_only: bool,
    threads: int,
    total_epochs: int | None,
    rows: tuple[str, ...],
    caption_images: bool,
) -> None:
    """Train and evaluate the rows of Inflate and Shrink's Table 2."""
    set_threads(threads)
    cfg = TrainConfig.from_dict(json_object(config_json, "--config", "training settings"))
    if caption_images:
        if total_epochs is None or chains or eval_only:
            raise click.UsageError(
                "--caption-images needs --total-epochs (and no --chain/--eval-only)"
            )
        order = [r for r in CAPTION_ORDER if not rows or r in rows]
        try:
            got = run_caption_table2(data_dir, run_dir, cfg, total_epochs, rows=order,
                                     val_images=val_images, evaluate=not no_eval)  # fmt: skip
        except IsrError as e:
            raise click.ClickException(f"{type(e).__name__}: {e}") from e
        keys = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "rsum")
        heads = ["model", "T->I R@1", "R@5", "R@10", "I->T R@1", "R@5", "R@10", "rsum"]
        click.echo(markdown_table(heads, [[n, *(r[k] for k in keys)]
                                          for n, r in got["recall"].items()], digits=1))  # fmt: skip
        click.echo(f"\nwrote {run_dir / 'table2_captions.json'}")
        return
    if eval_only and (no_eval or chains):
        raise click.UsageError("--eval-only takes neither --no-eval nor --chain")
    chosen = () if eval_only else (chains or CHAINS)
    res = run_table2(
        data_dir,
        run_dir,
        cfg,
        chains=chosen,
        val_images=val_images,
        evaluate=not no_eval,
        total_epochs=total_epochs,
        set_threads=set_threads,
        only_rows=rows or None,
    )
    if res is not None:
        click.echo(format_tables(res))
        click.echo(f"\nwrote {res.json_path}")


@click.command("appendix")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option(
    "--out", "run_dir", type=click.Path(path_type=Path), required=True,
    help="The run directory (the same as table2's --out: its tokenizer and rows are reused).",
)  # fmt: skip
@click.option("--config", "config_json", default=None, help="TrainConfig fields as JSON.")
@click.option("--total-epochs", type=int, required=True, help="Epochs of every row in all.")
@click.option(
    "--table",
    "tables",
    type=click.Choice(APPENDIX_TABLES),
    multiple=True,
    help="Tables to train (default: all, cheapest first).",
)
@click.option("--val-images", type=int, default=200, show_default=True)
@click.option("--train-only", is_flag=True, help="Train only.")
@click.option("--eval-only", is_flag=True, help="Train nothing; evaluate finished rows.")
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="R@1 against interactions PNG (default OUT/appendix_interactions.png).",
)
@click.option("--threads", type=int, default=1, show_default=True, help="torch threads.")
def appendix(
    data_dir: Path,
    run_dir: Path,
    config_json: str | None,
    total_epochs: int,
    tables: tuple[str, ...],
    val_images: int,
    train_only: bool,
    eval_only: bool,
    plot: Path | None,
    threads: int,
) -> None:
    """Train and evaluate the appendix sweeps (Tables 1, 6, 7) at matched total epochs."""
    set_threads(threads)
    fields = json_object(config_json, "--config", "training settings")
    if train_only and eval_only:
        raise click.UsageError("--train-only and --eval-only exclude each other")
    cfg = TrainConfig.from_dict(fields)
    train, vocab = load_paired(data_dir, "train", min_images=100)
    if not eval_only:
        dev, _ = load_paired(data_dir, "dev", vocab=vocab)
        val = dev.select(np.arange(min(val_images, len(dev))))
        train_appendix(total_epochs, cfg, train, val, vocab, run_dir, " ".join(sys.argv),
                       tables or APPENDIX_TABLES)  # fmt: skip
    if not train_only:
        test, _ = load_paired(data_dir, "test", vocab=vocab)
        res = evaluate_appendix(total_epochs, cfg, test, run_dir)
        png = plot_interactions(res, plot or run_dir / "appendix_interactions.png")
        click.echo(format_appendix(res))
        click.echo(f"\nwrote {run_dir / 'appendix.json'} and {png}")


@click.command("bench-ingest", help=(ingest_bench.__doc__ or "").split("\n\n")[0])
@click.option(
    "--images", type=int, default=100_000, show_default=True, help="encode+index run (0: skip)"
)
@click.option(
    "--encoded", type=int, default=100_000, show_default=True, help="Parquet / memory runs"
)
@click.option(
    "--jsonl", type=int, default=5_000, show_default=True, help="JSONL run (big files: keep small)"
)
@click.option(
    "--rss", default="100000,300000,1000000", show_default=True, help="memory marks ('' to skip)"
)
@click.option("--rss-dims", default="128,128,16", show_default=True, help="d_fast,d_frag,n_frags")
@click.option("--rss-codec", default="sq8", show_default=True)
@click.option("--batch", type=int, default=256, show_default=True)
@click.option(
    "--formats", default="memory,parquet,jsonl", show_default=True, help="indexing-only sources"
)
@click.option(
    "--codec", default="fp16", show_default=True, help="fragment codec of the indexing-only runs"
)
@click.option("--fast-storage", default="flat", show_default=True, help="HNSW vectors: flat or sq8")
@click.option("--commit-every", type=int, default=10_000, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option(
    "--workdir", type=click.Path(path_type=Path), default=None, help="default: a temp dir"
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def bench_ingest(threads: int | None, json_path: Path | None, **kw: Any) -> None:
    if threads:
        set_threads(threads)
    ingest_bench.run(ingest_bench.IngestBenchConfig(json=json_path, **kw))


@click.command("bench-maxsim", help=maxsim_bench.__doc__)
@click.option(
    "--sizes", default="1000,10000,100000", show_default=True, help="comma-separated C values"
)
@click.option("--nq", type=int, default=32, show_default=True)
@click.option("--n", type=int, default=32, show_default=True)
@click.option("--d", type=int, default=128, show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True)
@click.option("--store-rows", type=int, default=100_000, show_default=True)
@click.option("--codec", default="fp16", show_default=True)
@click.option("--k", type=int, default=10, show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available)")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: all)")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="where to build the store (temp)",
)
def bench_maxsim(sizes: str, threads: int | None, workdir: Path | None, **kw: Any) -> None:
    try:
        size_list = tuple(int(s) for s in sizes.split(","))
    except ValueError as e:
        raise click.BadParameter(
            f"comma-separated integers, got {sizes!r}", param_hint="--sizes"
        ) from e
    if threads is not None:
        set_threads(threads)
    maxsim_bench.report(maxsim_bench.BenchConfig(sizes=size_list, **kw), workdir)


@click.group("eval", cls=_Group)
def eval_group() -> None:
    """Evaluations (TREC-style runs, Table 2) and the benchmarks."""


for _cmd in (
    trec,
    table2,
    appendix,
    make_caption_images,
    bench_ingest,
    bench_facade,
    bench_maxsim,
    bench,
    screen_curve_cmd,
    train_heads_cmd,
):
    eval_group.add_command(_cmd)
