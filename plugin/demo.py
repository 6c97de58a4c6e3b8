"""`isr demo`: the main job on the embedded default, end to end, in one command.

Entry point: :func:`run_demo`. Until the encoders are wired in, it builds (or reuses) a
seeded synthetic *encoded* gallery in `workdir`, shows a few queries with their hits, stage
scores and timings, then a table of recall and latency per pipeline ablation.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from tqdm import tqdm

from isr.errors import NotFound
from isr.eval.ablations import run_ablations
from isr.eval.report import markdown_table
from isr.ingest.encoded_world import EncodedWorld, encoded_gallery, encoded_queries
from isr.plugin.index import EmbeddedIndex
from isr.plugin.manifest import IndexConfig
from isr.plugin.pipeline import SearchOptions, SearchResult, search

__all__ = ["run_demo"]

LICENSES = ("cc-by", "cc0", "cc-by-nc")


def _source(i: int) -> dict[str, object]:
    return {"license": LICENSES[i % 3], "year": 2000 + i % 25}


def build_index(
    path: Path, world: EncodedWorld, config: IndexConfig, batch: int = 2048
) -> EmbeddedIndex:
    """Create and fill an index with the synthetic world, or reopen a complete one."""
    try:
        index = EmbeddedIndex.open(path, expect=config)
        if len(index) == world.n_docs:
            return index
        index.close()
        EmbeddedIndex.destroy(path)
    except NotFound:
        pass
    index = EmbeddedIndex.create(path, config)
    t0 = time.perf_counter()
    with tqdm(total=world.n_docs, desc="indexing", unit="doc") as bar:
        start = 0
        for ids, items in encoded_gallery(world, batch):
            index.add(ids, items, [_source(start + j) for j in range(len(ids))])
            index.commit()
            start += len(ids)
            bar.update(len(ids))
    click.echo(f"indexed {world.n_docs} documents in {time.perf_counter() - t0:.1f} s")
    return index


def show(result: SearchResult, truth: str) -> None:
    rows = [
        [
            h.id + (" *" if h.id == truth else ""),
            h.score,
            h.fast_score,
            h.maxsim_score or 0.0,
            ",".join(h.keywords_matched),
            h.source.get("license") if h.source else "",
        ]
        for h in result.hits
    ]
    click.echo(
        markdown_table(
            ["id (* = truth)", "score", "fast", "max-sim", "keywords matched", "license"], rows, 3
        )
    )
    p = result.profile
    stages = ", ".join(
        f"{s.name} {s.ms:.2f} ms ({s.count}{' ' + s.detail if s.detail else ''})" for s in p.stages
    )
    click.echo(
        f"query keywords {list(p.query_keywords)}; {stages}; total {p.took_ms:.2f} ms"
        + (f"; relaxed: {p.relax_reason}" if p.relaxed else "")
    )


def run_demo(workdir: Path, n_docs: int = 20_000, n_queries: int = 200, seed: int = 0) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    world = EncodedWorld(n_docs=n_docs, seed=seed)
    config = IndexConfig(
        d_fast=world.d_fast, d_frag=world.d_frag, max_frags=world.n_frags, r_i=world.r_i
    )
    index = build_index(workdir / "index", world, config)
    try:
        queries, truth = encoded_queries(world, n_queries, seed=seed + 1)
        click.echo(f"\n== {len(index)} documents; three queries through the full pipeline ==")
        for i in range(3):
            click.echo(f"\nquery {i} (ground truth {truth[i]})")
            show(search(index, queries[i], SearchOptions(size=5)), truth[i])
        click.echo("\nthe same first query, restricted to license = cc0 and year >= 2010:")
        filt = {
            "bool": {"filter": [{"term": {"license": "cc0"}}, {"range": {"year": {"gte": 2010}}}]}
        }
        show(search(index, queries[0], SearchOptions(size=5, filter=filt)), truth[0])
        click.echo(
            f"\n== ablations over {len(queries)} queries (num_candidates 1000, rerank_window 200) =="
        )
        rows = run_ablations(index, queries, truth)
        table = [
            [r.name, r.recall_1, r.recall_10, r.p50_ms, r.p95_ms, 100 * r.admitted, 100 * r.relaxed]
            for r in rows
        ]
        click.echo(
            markdown_table(
                ["pipeline", "R@1", "R@10", "p50 ms", "p95 ms", "% admitted", "% relaxed"], table
            )
        )
    finally:
        index.close()
