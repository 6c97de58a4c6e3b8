"""Text -> image and image -> text retrieval of every pipeline configuration, TREC style.

Entry point: :func:`evaluate(TrecStyleConfig) -> TrecStyleReport`; ``isr eval trec`` (also
``python eval/run_trec_style.py``) is its command line.

For one split in the precomp layout (SCAN features, the synthetic world, or the
caption-described images of :mod:`isr.eval.caption_images`) and one bundle, both sides are
encoded once. Text -> image ("t2i"): each caption queries the image gallery, its image is the
one relevant document. Image -> text ("i2t"): each image queries the caption gallery, its
captions are relevant. Every configuration (an ablation of :data:`isr.plugin.pipeline.ABLATIONS`
at the index's R_I and the query's R_T) writes one run file, is measured by trec_eval
(:mod:`isr.eval.trec_measures`), and gets screening statistics and latency per stage. Then a
sweep over R_I x R_T runs one configuration (keywords + exhaustive max-sim by default: the
screen in front of exact scoring, the paper's Table V) on one index per R_I, built from the
same encoding; the R_I of the main index is reused.

Screening statistics: ``gt_kept``, the share of (query, relevant document) pairs that the
keyword screen admits (a screen dropped because it admitted fewer than ``depth`` documents
keeps everything, as the pipeline then does); ``admitted``, the mean share of the gallery that
reaches the scoring stages; ``speedup``, the mean CPU time per query of exhaustive max-sim over
that of the configuration (the thread's CPU time around each search: with one torch / FAISS
thread the whole search runs on it, and unlike wall time it does not grow while other processes
hold the cores of a shared machine); ``speedup_wall``, the same with median wall latencies.
Latency (p50/p95/p99 per stage) is the pipeline's own wall time (``SearchResult.profile``);
encoding the query is not included (the report gives the encoder's time per item separately).

Files written under ``out_dir``: ``qrels/{direction}.qrels``, ``runs/{direction}/{tag}.trec``,
``indexes/`` (galleries built here), ``report.md``, ``report.json``, ``sweep.png``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap
from tqdm import tqdm

from isr.encoders.bundle import Bundle
from isr.encoders.record import Encoded
from isr.errors import InvalidInput
from isr.eval.gallery import EncodedSplit, encode_split, open_gallery_index
from isr.eval.trec_io import Qrels, write_qrels, write_run
from isr.eval.trec_measures import trec_eval
from isr.eval.trec_report import write_outputs
from isr.plugin import ABLATIONS, EmbeddedIndex, KeywordOptions, SearchOptions, search

__all__ = [
    "CONFIGS",
    "DIRECTIONS",
    "ConfigResult",
    "TrecStyleConfig",
    "TrecStyleReport",
    "evaluate",
    "measures_for",
]

DIRECTIONS = ("t2i", "i2t")
CONFIGS = ("fast", "keywords+fast", "full", "fast+rerank", "exhaustive", "keywords+exhaustive")
REFERENCE = "exhaustive"  # what speed-ups are measured against; always run
CUTS = (1, 5, 10)


def measures_for(direction: str) -> dict[str, str]:
    """Column name -> trec_eval measure. R@k is recall.k for t2i (one relevant image) and
    success.k for i2t (five relevant captions: found when any one is in the top k)."""
    r = "recall" if direction == "t2i" else "success"
    cols = {f"R@{k}": f"{r}.{k}" for k in CUTS}
    return {**cols, "MRR": "recip_rank", "nDCG@10": "ndcg_cut.10"}


@dataclass(frozen=True)
class TrecStyleConfig:
    """One evaluation. Paths: ``data_dir`` (precomp layout) and ``split``; ``bundle_dir``;
    ``out_dir`` for every output. ``image_index`` / ``text_index``: the t2i / i2t gallery
    index (default ``out_dir/indexes/...``), built with R_I = ``r_i`` when absent.
    ``configs``: ablation names; exhaustive max-sim always runs, as the reference of every
    speed-up. ``r_t``: the query's keywords in ``configs``. ``depth``: hits per query (>= 10).
    ``max_queries``: a seeded sample of the queries of each direction (None: all).
    """

    data_dir: Path
    split: str
    bundle_dir: Path
    out_dir: Path
    image_index: Path | None = None
    text_index: Path | None = None
    directions: tuple[str, ...] = DIRECTIONS
    configs: tuple[str, ...] = CONFIGS
    r_i: int = 15
    r_t: int = 3
    keywords: KeywordOptions = field(default_factory=KeywordOptions)
    # a direction's own keyword options (e.g. an i2t caption gallery's calibrated scale and
    # gain, isr.eval.screen_calibrate), else ``keywords``
    direction_keywords: dict[str, KeywordOptions] = field(default_factory=dict)
    r_i_sweep: tuple[int, ...] = (5, 10, 15)
    r_t_sweep: tuple[int, ...] = (1, 2, 3, 5)
    sweep_config: str = "keywords+exhaustive"
    sweep_directions: tuple[str, ...] = ("t2i",)
    depth: int = 10
    num_candidates: int = 1000
    rerank_window: int = 200
    max_queries: int | None = None
    seed: int = 0
    codec: str = "fp16"
    title: str = ""
    command: str = ""
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("directions", "sweep_directions"):
            bad = [d for d in getattr(self, name) if d not in DIRECTIONS]
            if bad:
                raise InvalidInput(f"{name}: {bad} not in {DIRECTIONS}")
        if not self.directions:
            raise InvalidInput("directions: give at least one of t2i, i2t")
        bad = [c for c in (*self.configs, self.sweep_config) if c not in ABLATIONS]
        if bad:
            raise InvalidInput(f"configurations {bad} are not among {list(ABLATIONS)}")
        if not ABLATIONS[self.sweep_config][0]:
            raise InvalidInput(f"sweep_config {self.sweep_config!r} has no keyword screen")
        for name, values in (
            ("r_i", (self.r_i,)),
            ("r_t", (self.r_t,)),
            ("r_i_sweep", self.r_i_sweep),
            ("r_t_sweep", self.r_t_sweep),
        ):
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100:
                    raise InvalidInput(f"{name}: expected integers in [1, 100], got {v!r}")
        if self.depth < max(CUTS):
            raise InvalidInput(f"depth must be >= {max(CUTS)} (R@10, nDCG@10), got {self.depth}")
        if self.max_queries is not None and self.max_queries < 1:
            raise InvalidInput(f"max_queries must be >= 1 or None, got {self.max_queries}")
        bad = [d for d in self.direction_keywords if d not in DIRECTIONS]
        if bad:
            raise InvalidInput(f"direction_keywords: {bad} not in {DIRECTIONS}")
        for ablation in (*self.run_configs(), self.sweep_config):
            self.options(ablation, self.r_t)  # SearchOptions validates the stage settings

    def options(
        self, ablation: str, r_t: int, r_i: int | None = None, direction: str = "t2i"
    ) -> SearchOptions:
        """The direction's keyword options (text mode, rule) with this R_T and a query-time R_I."""
        kw = self.direction_keywords.get(direction, self.keywords)
        return SearchOptions.for_ablation(
            ablation,
            size=self.depth,
            num_candidates=self.num_candidates,
            rerank_window=self.rerank_window,
            keywords=replace(kw, r_t=r_t, r_i=r_i),
            with_source=False,
        )

    @property
    def stored_r_i(self) -> int:
        """Labels stored per document in a built index: every R_I of the run is a prefix."""
        return max(self.r_i, *self.r_i_sweep)

    def run_configs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.configs, REFERENCE)))


@dataclass(frozen=True)
class ConfigResult:
    """One configuration in one direction. ``metrics`` are percentages (R@k, R@sum, MRR,
    nDCG@10); ``trec`` the raw trec_eval means. ``r_t`` is None without a keyword screen, and
    then ``gt_kept`` is None too. ``latency``: "total" and each stage -> p50/p95/p99/mean ms
    and the mean count of documents the stage admitted or scored."""

    direction: str
    ablation: str
    tag: str
    r_i: int
    r_t: int | None
    sweep: bool
    queries: int
    gallery: int
    metrics: dict[str, float]
    trec: dict[str, float]
    gt_kept: float | None
    admitted: float
    relaxed: float
    mean_ms: float  # wall
    cpu_ms: float  # mean CPU time of the searching thread per query
    latency: dict[str, dict[str, float]]
    run_file: str
    speedup: float | None = None  # mean CPU time of exhaustive max-sim / mean CPU time of this
    speedup_wall: float | None = None  # the same with median wall latencies


@dataclass(frozen=True)
class TrecStyleReport:
    config: TrecStyleConfig
    bundle_fingerprint: str
    results: tuple[ConfigResult, ...]
    encode_ms: dict[str, float]  # per item, batched: "image", "text"
    indexes: dict[str, str]  # direction -> main index path
    files: dict[str, str] = field(default_factory=dict)  # report.md, report.json, sweep.png

    def result(self, direction: str, ablation: str, sweep: bool = False) -> ConfigResult | None:
        return next(
            (
                r
                for r in self.results
                if r.direction == direction and r.ablation == ablation and r.sweep == sweep
            ),
            None,
        )


# -- the queries of one direction ---------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Direction:
    name: str
    modality: str  # of the gallery
    gallery_ids: tuple[str, ...]
    gallery: Encoded
    qids: tuple[str, ...]
    queries: Encoded
    qrels: Qrels


def _direction(name: str, enc: EncodedSplit, max_queries: int | None, seed: int) -> _Direction:
    if name == "t2i":
        qids, queries = enc.caption_ids, enc.captions
        truth = [[enc.image_ids[i]] for i in enc.caption_image.tolist()]
        gallery_ids, gallery, modality = enc.image_ids, enc.images, "image"
    else:
        qids, queries = enc.image_ids, enc.images
        owned: list[list[str]] = [[] for _ in enc.image_ids]
        for cid, i in zip(enc.caption_ids, enc.caption_image.tolist()):
            owned[i].append(cid)
        truth = owned
        gallery_ids, gallery, modality = enc.caption_ids, enc.captions, "text"
    pick = np.arange(len(qids))
    if max_queries is not None and max_queries < len(qids):
        pick = np.sort(np.random.default_rng(seed).choice(len(qids), max_queries, replace=False))
    qrels = {qids[i]: {d: 1 for d in truth[i]} for i in pick.tolist()}
    return _Direction(
        name,
        modality,
        gallery_ids,
        gallery,
        tuple(qids[i] for i in pick.tolist()),
        _take(queries, pick) if len(pick) < len(qids) else queries,
        qrels,
    )


def _take(e: Encoded, idx: np.ndarray) -> Encoded:
    return Encoded(e.fast[idx], e.fragments[idx], e.mask[idx], tuple(e.keywords[i] for i in idx))


# -- one configuration --------------------------------------------------------------------------


def _stats(ms: Sequence[float], counts: Sequence[int] | None = None) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    out = {f"p{p}": float(np.percentile(a, p)) for p in (50, 95, 99)}
    out["mean"] = float(a.mean())
    if counts is not None:
        out["count"] = float(np.mean(counts))
    return out


def _screen(index: EmbeddedIndex, labels: Sequence[str], opt: SearchOptions) -> BitMap:
    """The documents the keyword screen admits (as EmbeddedIndex.candidates computes them)."""
    kw = opt.keywords
    rows: BitMap = (
        index.keyword_rows(labels, kw.mode, kw.minimum_should_match, kw.r_i) & index.alive
    )
    return rows


def _run_one(
    index: EmbeddedIndex,
    d: _Direction,
    opt: SearchOptions,
    row_of: dict[str, int],
    desc: str,
    progress: bool,
) -> tuple[dict[str, list[tuple[str, float]]], dict[str, Any]]:
    items = [d.queries[i] for i in range(len(d.qids))]  # sliced outside the timed searches
    search(index, items[0], opt)  # warm-up: first-call allocations, thread pools
    run: dict[str, list[tuple[str, float]]] = {}
    took: list[float] = []
    cpu: list[float] = []
    stage_ms: dict[str, list[float]] = {}
    stage_n: dict[str, list[int]] = {}
    admitted: list[float] = []
    kept = pairs = relaxed = 0
    for qid, q in tqdm(
        zip(d.qids, items), total=len(items), desc=desc, disable=not progress, unit="q"
    ):
        c0 = time.thread_time()
        res = search(index, q, opt)
        cpu.append((time.thread_time() - c0) * 1e3)
        run[qid] = [(h.id, h.score) for h in res.hits]
        took.append(res.profile.took_ms)
        for s in res.profile.stages:
            stage_ms.setdefault(s.name, []).append(s.ms)
            stage_n.setdefault(s.name, []).append(s.count)
        admitted.append(res.total / max(res.profile.gallery, 1))
        if opt.use_keywords:
            truth = [row_of[x] for x in d.qrels[qid]]
            pairs += len(truth)
            if res.profile.relaxed:
                relaxed += 1
                kept += len(truth)
            else:
                rows = _screen(index, res.profile.query_keywords, opt)
                assert len(rows) == res.total, (len(rows), res.total)
                kept += sum(r in rows for r in truth)
    n = len(items)
    stats = {
        "gt_kept": kept / pairs if opt.use_keywords else None,
        "admitted": float(np.mean(admitted)),
        "relaxed": relaxed / n,
        "mean_ms": float(np.mean(took)),
        "cpu_ms": float(np.mean(cpu)),
        "latency": {
            "total": _stats(took),
            **{k: _stats(v, stage_n[k]) for k, v in stage_ms.items()},
        },
    }
    return run, stats


def _evaluate_config(
    index: EmbeddedIndex,
    d: _Direction,
    ablation: str,
    r_t: int,
    sweep: bool,
    cfg: TrecStyleConfig,
    qrels_file: Path,
    row_of: dict[str, int],
    r_i_at: int | None = None,
) -> ConfigResult:
    r_i = r_i_at if r_i_at is not None else index.config.r_i
    opt = cfg.options(ablation, r_t, r_i, d.name)
    screened = opt.use_keywords
    tag = ablation + (f".ri{r_i}.rt{r_t}" if screened else "")
    run, st = _run_one(index, d, opt, row_of, f"{d.name} {tag}", cfg.progress)
    run_file = write_run(cfg.out_dir / "runs" / d.name / f"{tag}.trec", run, tag)
    cols = measures_for(d.name)
    got = trec_eval(qrels_file, run_file, list(cols.values()))
    metrics = {c: 100.0 * got[m] for c, m in cols.items()}
    metrics["R@sum"] = sum(metrics[f"R@{k}"] for k in CUTS)
    return ConfigResult(
        direction=d.name,
        ablation=ablation,
        tag=tag,
        r_i=r_i,
        r_t=r_t if screened else None,
        sweep=sweep,
        queries=len(d.qids),
        gallery=len(index),
        metrics=metrics,
        trec=got,
        run_file=str(run_file),
        **st,
    )


# -- the whole evaluation -----------------------------------------------------------------------


def evaluate(cfg: TrecStyleConfig) -> TrecStyleReport:
    """Run every configuration (and the sweep) in every direction; write the outputs."""

    bundle = Bundle.load(Path(cfg.bundle_dir))
    top = bundle.cfg.top_keywords
    too_many = [r for r in (cfg.r_i, *cfg.r_i_sweep) if r > top]
    if too_many:
        raise InvalidInput(
            f"R_I {too_many} exceeds the {top} keywords the bundle gives per item (top_keywords)"
        )
    fp = bundle.fingerprint
    enc = encode_split(Path(cfg.data_dir), cfg.split, bundle, progress=cfg.progress)
    out = Path(cfg.out_dir)
    results: list[ConfigResult] = []
    indexes: dict[str, str] = {}
    for name in cfg.directions:
        d = _direction(name, enc, cfg.max_queries, cfg.seed)
        gallery = "images" if name == "t2i" else "captions"
        given = cfg.image_index if name == "t2i" else cfg.text_index
        r_st = cfg.stored_r_i
        path = Path(given) if given is not None else out / "indexes" / f"{gallery}-ri{r_st}"

        def open_index(path: Path, r_i: int, require_r_i: bool, d: _Direction = d) -> EmbeddedIndex:
            return open_gallery_index(
                path, d.gallery_ids, d.gallery, modality=d.modality, fingerprint=fp, r_i=r_i,
                max_frags=bundle.max_frags, codec=cfg.codec, require_r_i=require_r_i,
                progress=cfg.progress,
            )  # fmt: skip

        qrels_file = write_qrels(out / "qrels" / f"{name}.qrels", d.qrels)
        main = open_index(path, r_st, False)
        indexes[name] = str(path)
        try:
            row_of = main.rows_of(list(d.gallery_ids))
            done: dict[tuple[str, int, int | None], ConfigResult] = {}
            for ablation in cfg.run_configs():
                r = _evaluate_config(
                    main, d, ablation, cfg.r_t, False, cfg, qrels_file, row_of, cfg.r_i
                )
                results.append(r)
                done[(ablation, r.r_i, r.r_t)] = r
            if name in cfg.sweep_directions:
                results += _sweep(cfg, d, main, done, qrels_file, open_index)
        finally:
            main.close()
    results = _with_speedups(results)
    n_img, n_txt = max(len(enc.image_ids), 1), max(len(enc.caption_ids), 1)
    report = TrecStyleReport(
        config=cfg,
        bundle_fingerprint=fp,
        results=tuple(results),
        encode_ms={
            "image": 1e3 * enc.encode_s["images"] / n_img,
            "text": 1e3 * enc.encode_s["captions"] / n_txt,
        },
        indexes=indexes,
    )
    return replace(report, files=write_outputs(report))


def _sweep(
    cfg: TrecStyleConfig,
    d: _Direction,
    main: EmbeddedIndex,
    done: dict[tuple[str, int, int | None], ConfigResult],
    qrels_file: Path,
    open_index: Callable[[Path, int, bool], EmbeddedIndex],
) -> list[ConfigResult]:
    results = []
    gallery = "images" if d.name == "t2i" else "captions"
    for r_i in cfg.r_i_sweep:
        # Per-rank postings: an R_I up to the stored one is a query-time choice, one index.
        own = r_i > main.config.r_i
        path = Path(cfg.out_dir) / "indexes" / f"{gallery}-ri{r_i}"
        index = open_index(path, r_i, True) if own else main
        try:
            row_of = index.rows_of(list(d.gallery_ids))
            for r_t in cfg.r_t_sweep:
                prior = done.get((cfg.sweep_config, r_i, r_t))
                if prior is not None:  # the same run as a main configuration
                    results.append(replace(prior, sweep=True))
                    continue
                results.append(
                    _evaluate_config(
                        index, d, cfg.sweep_config, r_t, True, cfg, qrels_file, row_of, r_i
                    )
                )
        finally:
            if own:
                index.close()
    return results


def _with_speedups(results: list[ConfigResult]) -> list[ConfigResult]:
    ref = {r.direction: r for r in results if r.ablation == REFERENCE and not r.sweep}

    def p50(r: ConfigResult) -> float:
        return r.latency["total"]["p50"]

    return [
        replace(
            r,
            speedup=ref[r.direction].cpu_ms / r.cpu_ms,
            speedup_wall=p50(ref[r.direction]) / p50(r),
        )
        for r in results
    ]
