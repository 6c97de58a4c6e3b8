"""Benchmark of the embedded engine (issue 2): add rate, bytes per document, query latency per
ablation, filtered kNN recall against exact search. Query encoding is excluded throughout.

Run: `python eval/bench_engine.py --docs 100000` (prints Markdown tables; `--json` saves them).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from isr.eval.ablations import run_ablations
from isr.eval.report import markdown_table
from isr.ingest.encoded_world import EncodedWorld, encoded_gallery, encoded_queries
from isr.plugin.index import EmbeddedIndex
from isr.plugin.manifest import IndexConfig
from isr.plugin.pipeline import SearchOptions
from isr.plugin.runtime import set_threads


def bench_add(path: Path, world: EncodedWorld, config: IndexConfig, batch: int) -> dict[str, float]:
    index = EmbeddedIndex.create(path, config)
    spent = 0.0
    with tqdm(total=world.n_docs, desc="add", unit="doc", mininterval=2) as bar:
        for ids, items in encoded_gallery(world, batch):  # generation is not timed
            t0 = time.perf_counter()
            index.add(ids, items)
            index.commit()
            spent += time.perf_counter() - t0
            bar.update(len(ids))
    t0 = time.perf_counter()
    index.close()  # writes the HNSW snapshot
    close_s = time.perf_counter() - t0
    return {"add_s": spent, "close_s": close_s, "docs_per_s": world.n_docs / spent}


def filtered_recall(
    index: EmbeddedIndex, queries, r_t: int, ef: int, threshold: int
) -> tuple[float, float, int]:
    """Recall@10 of the keyword-filtered HNSW search against exact search over the same filter."""
    recalls, shares, hnsw = [], [], 0
    for i in range(len(queries)):
        allowed = index.keyword_rows(queries.keywords[i].top(r_t), "any") & index.alive
        if len(allowed) < 10:
            continue
        q = queries.fast[i]
        approx = index.knn(q, 10, ef, allowed, threshold)
        hnsw += approx.method.startswith("hnsw")
        exact = index.fast.exact(q, 10, allowed)
        recalls.append(len(set(approx.rows.tolist()) & set(exact.rows.tolist())) / 10)
        shares.append(len(allowed) / len(index))
    return float(np.mean(recalls)), float(np.mean(shares)), hnsw


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--exhaustive-queries",
        type=int,
        default=20,
        help="exhaustive max-sim is slow: fewer queries",
    )
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--codec", default="fp16")
    ap.add_argument("--hnsw-m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=100)
    ap.add_argument(
        "--threads", type=int, default=None, help="torch/FAISS threads (default: all cores)"
    )
    ap.add_argument("--fast-storage", default="flat")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep the index here (default: a temp dir)"
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        set_threads(args.threads)

    world = EncodedWorld(n_docs=args.docs)
    config = IndexConfig(
        d_fast=world.d_fast,
        d_frag=world.d_frag,
        max_frags=world.n_frags,
        r_i=world.r_i,
        codec=args.codec,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.ef_construction,
        fast_storage=args.fast_storage,
    )
    root = args.workdir or Path(tempfile.mkdtemp(prefix="isr-bench-"))
    path = root / "index"
    if path.exists():
        shutil.rmtree(path)
    print(
        f"# isr engine benchmark: {args.docs} docs, fast {world.d_fast}-d, {world.n_frags} x {world.d_frag}-d fragments ({args.codec})"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, python {platform.python_version()}"
    )
    add = bench_add(path, world, config, args.batch)
    index = EmbeddedIndex.open(path, readonly=True)
    stats = index.stats()
    print(
        f"\nadd: {add['docs_per_s']:.0f} docs/s ({add['add_s']:.1f} s add+commit, {add['close_s']:.1f} s final HNSW snapshot)\n"
    )
    rows = [[k, v, v / stats["documents"]] for k, v in stats["bytes"].items()]
    rows.append(["total", stats["bytes_total"], stats["bytes_total"] / stats["documents"]])
    print(markdown_table(["structure", "bytes", "bytes/doc"], rows, 1))

    queries, truth = encoded_queries(world, args.queries, seed=11)
    base = SearchOptions(num_candidates=1000, rerank_window=200)
    fast_names = ["fast", "keywords+fast", "full", "fast+rerank"]
    results = run_ablations(index, queries, truth, base, fast_names)
    n_ex = min(args.exhaustive_queries, len(queries))
    results += run_ablations(
        index, queries[:n_ex], truth[:n_ex], base, ["exhaustive", "keywords+exhaustive"]
    )
    exhaustive = {r.name: r for r in results}["exhaustive"]
    ex_tops = exhaustive.hits
    table = []
    for r in results:
        agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(r.hits[:n_ex], ex_tops)])
        table.append(
            [
                r.name,
                r.recall_1,
                r.recall_10,
                r.p50_ms,
                r.p95_ms,
                100 * r.admitted,
                exhaustive.p50_ms / r.p50_ms,
                agree,
            ]
        )
    print(
        f"\nqueries: {len(queries)} ({n_ex} for the exhaustive rows); num_candidates 1000, rerank_window 200, r_t 3\n"
    )
    print(
        markdown_table(
            [
                "pipeline",
                "R@1",
                "R@10",
                "p50 ms",
                "p95 ms",
                "% admitted",
                "speed-up vs exhaustive",
                "top-10 overlap with exhaustive",
            ],
            table,
        )
    )
    rec, share, hnsw = filtered_recall(index, queries, 3, 1000, base.exact_threshold)
    print(
        f"\nfiltered kNN recall@10 vs exact (keyword filter, ef 1000): {rec:.4f} over {len(queries)} queries; filter admits {100 * share:.1f}% on average; {hnsw} searches went through HNSW"
    )
    rec128, _, _ = filtered_recall(index, queries, 3, 128, base.exact_threshold)
    print(f"filtered kNN recall@10 vs exact at ef 128: {rec128:.4f}")
    index.close()
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "add": add,
                    "stats": stats,
                    "ablations": [
                        {k: v for k, v in r.__dict__.items() if k != "hits"} for r in results
                    ],
                    "filtered_recall_ef1000": rec,
                    "filtered_recall_ef128": rec128,
                },
                indent=2,
            )
        )
    if args.workdir is None:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
