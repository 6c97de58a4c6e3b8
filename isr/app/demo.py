"""`isr demo` (`make demo`): the main job on the embedded default, end to end.

Entry point: :func:`run_demo`. Steps, each reusing what an earlier run left in `workdir`:
1. a seeded synthetic world (region features + captions, SCAN precomp layout);
2. a small bundle trained with the paper's recipe (inflate -> shrink-base -> shrink-fast), then
   its keyword heads trained again on the frozen B (the dedicated head stage, ``HEADS``);
3. the test images loaded into an embedded index (`load_gallery`, resumable);
4. a few of the test captions as real text queries, with their hits, stage scores and timings;
5. the TREC-style evaluation table of every pipeline configuration (`eval/run_trec_style.py`);
6. the index served over HTTP in Elasticsearch's shapes, queried with the official client.
Sizes are chosen to finish in a few minutes on a 2-core CPU; the model is small and briefly
trained, so its recall is far below a real model's — the point is the whole flow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from elasticsearch import Elasticsearch

from isr.app.presets import PRESETS, SCREEN_DEFAULTS
from isr.app.serve import create_app
from isr.encoders.bundle import Bundle
from isr.encoders.train import TrainConfig, run_recipe
from isr.eval.report import markdown_table
from isr.eval.trec_style import TrecStyleConfig, evaluate
from isr.ingest.loader import IngestOptions, load_gallery
from isr.ingest.precomp import PrecompSplit
from isr.ingest.precomp_source import PrecompSource
from isr.ingest.synthetic_world import generate_world
from isr.ingest.training_data import load_paired
from isr.plugin import EmbeddedIndex, SearchOptions, SearchResult, search
from isr.plugin.http.server import ServerConfig, serve_in_thread
from isr.plugin.pipeline import KeywordOptions

__all__ = ["run_demo"]

WORLD: dict[str, Any] = {"n_train": 2000, "n_dev": 200, "n_test": 500, "m": 16, "D": 64}
TRAIN: dict[str, Any] = {
    **PRESETS["tiny"],
    "progress": True,
    "device": "cpu",
}  # isr train --preset tiny


# The dedicated keyword-head stage and the screen's defaults, recorded in the demo's index like
# any index `isr load` makes (presets.SCREEN_DEFAULTS; docs/results/screen_*.md for the curve).
# 20 epochs at lr 1e-2 (BENCHMARKS.md "Keyword screen (issue 12), session 4"): 10 epochs of 40
# steps at 2e-3 left the heads far from trained (dev mAP 43.6 / 29.4; 20 at 1e-2: 78.5 / 55.1,
# as 30 at 5e-3 or 60 at 2e-3).
HEADS: dict[str, Any] = {"head": "attn", "loss": "bce", "epochs": 20, "lr": 1e-2}
# The heads' vocabulary threshold, the paper's scaled to the training set (100 of ~29K Flickr30K
# images -> 7 of the demo's 2,000; the recipe's multi-task heads keep their stricter 50).
HEAD_MIN_IMAGES = max(1, round(WORLD["n_train"] * 100 / 29_000))
KEYWORDS: dict[str, Any] = {"r_t": 3, **SCREEN_DEFAULTS}
# The screen's scale and gain are then measured on the dev split (`isr index calibrate-screen`):
# the least admitted keeping this share of the dev ground truth.
CALIBRATE_KEPT = 0.99


def _step(n: int, text: str) -> float:
    click.secho(f"\n== {n}. {text} ==", bold=True)
    return time.perf_counter()


def show(result: SearchResult) -> None:
    rows = [
        [
            h.id,
            h.score,
            h.fast_score,
            h.maxsim_score if h.maxsim_score is not None else 0.0,
            ",".join(h.keywords_matched),
            (h.source or {}).get("captions", [""])[0][:60],
        ]
        for h in result.hits
    ]
    click.echo(
        markdown_table(
            ["id", "score", "fast", "max-sim", "keywords matched", "first caption"], rows, 3
        )
    )
    p = result.profile
    stages = ", ".join(f"{s.name} {s.ms:.2f} ms ({s.count})" for s in p.stages)
    relaxed = f"; relaxed: {p.relax_reason}" if p.relaxed else ""
    click.echo(
        f"query keywords {list(p.query_keywords)}; {stages}; total {p.took_ms:.2f} ms{relaxed}"
    )


def run_demo(workdir: Path, seed: int = 0, queries: int = 200) -> None:

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()

    t0 = _step(1, "synthetic world")
    world = workdir / "world"
    if (world / "world.json").exists():
        click.echo(f"reusing {world}")
    else:
        generate_world(world, seed=seed, **WORLD)
    test = PrecompSplit.open(world, "test")
    click.echo(
        f"{test.n_images} test images of {test.m} regions x {test.dim} features; e.g. {test.captions_of(0)[0]!r}"
    )
    click.echo(f"({time.perf_counter() - t0:.1f} s)")

    t0 = _step(2, "train a small bundle with the paper's recipe (I -> B -> F)")
    train, vocab = load_paired(world, "train", min_images=50)
    val, _ = load_paired(world, "dev", vocab=vocab)
    bundle_dir = run_recipe(
        "paper",
        TrainConfig(seed=seed, **TRAIN),
        train,
        workdir / "run",
        vocab=vocab,
        val=val,
        command="isr demo",
    )
    bundle_dir = _train_heads(workdir / "run", world)
    bundle = Bundle.load(bundle_dir)
    click.echo(
        f"bundle {bundle_dir} ({len(bundle.keyword_vocab or ())} keyword labels; "
        f"{time.perf_counter() - t0:.1f} s)"
    )

    t0 = _step(3, "load the test images into an embedded index")
    index_root = workdir / "indexes"
    index_dir = index_root / "gallery"
    report = load_gallery(
        PrecompSource(world, "test"),
        str(index_dir),
        bundle,
        IngestOptions(resume=True, commit_every=250, keywords=KEYWORDS),
    )
    click.echo(report.summary() if hasattr(report, "summary") else str(report))
    kw_t2i, kw_i2t = _calibrate(bundle_dir, world, index_dir)
    click.echo(f"({time.perf_counter() - t0:.1f} s)")

    t0 = _step(4, "text queries through the full isr pipeline")
    with EmbeddedIndex.open(index_dir, readonly=True) as index:
        click.echo(
            f"the index's keyword defaults (a query's own options win): {index.config.keywords}"
        )
        for i in (0, 1, 2):
            text = test.captions_of(i)[4]
            click.echo(f"\nquery {text!r} (its image: {i})")
            show(
                search(
                    index,
                    bundle.encode_texts([text]),
                    SearchOptions(size=5, rerank_window=100, num_candidates=200),
                )
            )
    click.echo(f"({time.perf_counter() - t0:.1f} s)")

    t0 = _step(5, "evaluation: every pipeline configuration, TREC runs, trec_eval")
    rep = evaluate(
        TrecStyleConfig(
            data_dir=world,
            split="test",
            bundle_dir=bundle_dir,
            out_dir=workdir / "eval",
            image_index=index_dir,
            max_queries=queries,
            title="isr demo (synthetic world)",
            command="isr demo",
            r_t=kw_t2i["r_t"],
            r_i=kw_t2i.get("r_i", 15),
            keywords=_options(kw_t2i),
            direction_keywords={"i2t": _options(kw_i2t)},
        )
    )
    click.echo(
        Path(rep.files["report.md"]).read_text() if "report.md" in rep.files else str(rep.files)
    )
    for r in rep.results:
        if r.ablation == "full" and not r.sweep and r.gt_kept is not None:
            click.secho(
                f"keyword screen ({r.direction}, R_I={r.r_i}, R_T={r.r_t}): admits "
                f"{100 * r.admitted:.1f}% of the gallery and keeps {100 * r.gt_kept:.1f}% of "
                f"the ground truth (lift {r.gt_kept / max(r.admitted, 1e-9):.2f}; a random "
                "filter of that size: 1.00)",
                bold=True,
            )
    click.echo(f"({time.perf_counter() - t0:.1f} s)")

    t0 = _step(6, "serve the index over HTTP and query it with the official Elasticsearch client")
    _serve_and_query(index_root, bundle_dir, test.captions_of(3)[4])
    click.echo(f"({time.perf_counter() - t0:.1f} s)")
    click.secho(
        f"\ndemo finished in {time.perf_counter() - t_all:.0f} s; outputs in {workdir}", bold=True
    )


def _options(kw: dict[str, Any]) -> KeywordOptions:
    return KeywordOptions(**{k: v for k, v in kw.items() if k not in ("r_t", "r_i")})


def _calibrate(bundle_dir: Path, world: Path, index_dir: Path) -> tuple[dict[str, Any], ...]:
    """The screen's scale and gain measured on the dev split for the image gallery (recorded
    in the index, as `isr index calibrate-screen`) and for a caption gallery (the evaluation's
    i2t direction): the keyword options of each."""
    from isr.app.presets import SCREEN_DEFAULTS_TEXT
    from isr.app.screen_cli import calibrate_split, describe
    from isr.eval.screen_curve import _open

    stage = _open(bundle_dir)
    dev = PrecompSplit.open(world, "dev")
    images, texts, c = np.asarray(dev.images), list(dev.captions), dev.caps_per_image
    out = []
    for modality, base in (("image", KEYWORDS), ("text", {"r_t": 3, **SCREEN_DEFAULTS_TEXT})):
        cal = calibrate_split(stage, images, texts, c, modality, base, base.get("r_i", 15),
                              CALIBRATE_KEPT)  # fmt: skip
        click.echo(f"screen calibrated on the dev split, {modality} gallery: "
                   f"{describe(cal, CALIBRATE_KEPT)}")  # fmt: skip
        out.append({**base, **cal.defaults()})
    with EmbeddedIndex.open(index_dir) as index:
        index.set_keyword_defaults(out[0])
    return out[0], out[1]


def _train_heads(run: Path, world: Path) -> Path:
    """The dedicated head stage on the frozen shrink-base B; returns its bundle directory."""
    from isr.encoders.bundle import write_bundle
    from isr.encoders.head_stage import HeadConfig, train_heads
    from isr.encoders.vocabulary import KeywordVocab
    from isr.eval.keywords import mean_average_precision
    from isr.ingest.precomp import PrecompSplit, group_captions

    out = run / f"heads-{HEADS['head']}-e{HEADS['epochs']}-v{HEAD_MIN_IMAGES}"
    tr, va = PrecompSplit.open(world, "train"), PrecompSplit.open(world, "dev")
    c, cv = tr.caps_per_image, va.caps_per_image
    tr_caps, va_caps = list(tr.captions), list(va.captions)
    vocab = KeywordVocab.build(group_captions(tr_caps, c), min_images=HEAD_MIN_IMAGES)
    train_heads(
        run / "shrink-base", out, vocab=vocab, train_images=tr.images, train_texts=tr_caps,
        train_labels=vocab.multi_hot(group_captions(tr_caps, c)),
        text_image=np.arange(len(tr_caps)) // c, val_images=va.images, val_texts=va_caps,
        val_labels=vocab.multi_hot(group_captions(va_caps, cv)),
        val_text_image=np.arange(len(va_caps)) // cv, cfg=HeadConfig(**HEADS),
        map_fn=mean_average_precision, command="isr demo", log=click.echo,
    )  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())["val"]
    click.echo(f"keyword heads ({HEADS}, {len(vocab)} labels on >= {HEAD_MIN_IMAGES} training "
               f"images): held-out mAP image {100 * m['map_image']:.1f}, "
               f"text {100 * m['map_text']:.1f}")  # fmt: skip
    bundle = out / "bundle"
    if not (bundle / "config.json").exists():
        write_bundle(out, run / "shrink-fast", bundle)
    return bundle


def _serve_and_query(index_root: Path, bundle_dir: Path, text: str) -> None:

    app = create_app(ServerConfig(root=index_root, bundle=bundle_dir))
    with serve_in_thread(app) as url:
        click.echo(f"facade at {url}; POST /gallery/_search with ext.isr.query_text = {text!r}")
        es = Elasticsearch(url)
        resp = es.search(
            index="gallery",
            size=3,
            ext={"isr": {"query_text": text, "num_candidates": 200, "rerank_window": 100}},
        )
        for hit in resp["hits"]["hits"]:
            isr = hit["_isr"]
            click.echo(
                f"  {hit['_id']}  score {hit['_score']:.3f}  keywords {isr.get('keywords_matched')}"
            )
        click.echo(
            f"  took {resp['took']} ms; stages {[(s['name'], round(s['ms'], 2)) for s in resp['isr']['stages']]}"
        )
