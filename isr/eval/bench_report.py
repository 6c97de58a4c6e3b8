"""The scale benchmark's report: Markdown tables and the latency-vs-gallery-size plot.

Entry points: :func:`render(result) -> str` and :func:`plot_latency(result, file)`, over the
JSON-able result of :func:`isr.eval.bench.run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from isr.eval.report import markdown_table

__all__ = ["plot_latency", "render", "targets"]

STAGES = ("filter", "keywords", "knn", "rerank", "fetch")
STRUCTURES = ("fast_vectors", "hnsw", "keywords", "fragments", "doctable")

# The CPU targets at the largest gallery.
P50_MS = 20.0
SPEEDUP = 150.0
RECALL_KEPT = 0.99
KERNEL_PCT = 60.0
BYTES_PER_ITEM = 6 * 1024


def _n(n: int) -> str:
    return f"{n:,}"


def _yes(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def targets(res: dict[str, Any]) -> list[list[Any]]:
    """(target, measured, met) rows for the largest gallery and the kernel."""
    big = res["sizes"][-1]
    full = _ablation(big, "full")
    kernel = max((r["pct_peak"] for r in res["kernel"]), default=float("nan"))
    per_item = big["bytes_total"] / big["docs"]
    return [
        [f"full pipeline p50 <= {P50_MS:.0f} ms", f"{full['p50_ms']:.1f} ms", _yes(full["p50_ms"] <= P50_MS)],
        [f">= {SPEEDUP:.0f}x faster than exhaustive max-sim", f"{big['speedup_full']:.0f}x", _yes(big["speedup_full"] >= SPEEDUP)],
        [f"keeps >= {100 * RECALL_KEPT:.0f}% of exhaustive recall@10", f"{100 * big['recall_kept']:.1f}%", _yes(big["recall_kept"] >= RECALL_KEPT)],
        [f"max-sim kernel >= {KERNEL_PCT:.0f}% of matmul peak", f"{kernel:.0f}% (best batch size)", _yes(kernel >= KERNEL_PCT)],
        [f"index <= {BYTES_PER_ITEM:,} bytes/item ({big['build'].get('codec', res['config']['codec'])} fragments)", f"{per_item:,.0f}", _yes(per_item <= BYTES_PER_ITEM)],
    ]  # fmt: skip


def _ablation(size: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in size["ablations"] if a["name"] == name)


def render(res: dict[str, Any]) -> str:
    cfg, m = res["config"], res["machine"]
    out = [
        "# isr scale benchmark",
        "",
        f"{m['date']}; {m['cores']} x {m['cpu']} cores; python {m['python']}, torch {m['torch']}, "
        f"faiss {m['faiss']}; load average {m['load_avg_start']:.1f} at the start, "
        f"{m.get('load_avg_end', float('nan')):.1f} at the end.",
        f"Galleries: synthetic encoded world (fast 256-d, 32 x 128-d fragments, R_I 15), "
        f"fragments {cfg['codec']}, HNSW m {cfg['hnsw_m']} / ef_construction "
        f"{cfg['ef_construction']} over {cfg['fast_storage']} vectors. Queries: {cfg['queries']} "
        f"({cfg['exhaustive_queries']} for the exhaustive rows), num_candidates "
        f"{cfg['num_candidates']}, rerank_window {cfg['rerank_window']}, R_T 3; "
        f"{cfg['threads']} thread(s) per query, exhaustive scans split across "
        f"{cfg['exhaustive_workers'] or m['cores']} thread(s). Query encoding excluded; index "
        f"files read once and an untimed pass of {cfg['queries']} other queries before timing (a warm "
        "server).",
        "",
        "## Build and size",
        "",
    ]
    rows = []
    for s in res["sizes"]:
        b = s["build"]
        rows.append(
            [_n(s["docs"]), round(b["docs_per_s"]), b["threads"]]
            + [round(s["bytes"].get(k, 0) / s["docs"]) for k in STRUCTURES]
            + [round(s["bytes_total"] / s["docs"])]
        )
    out.append(
        markdown_table(
            [
                "docs",
                "build docs/s",
                "threads",
                *(f"{k} B/item" for k in STRUCTURES),
                "total B/item",
            ],
            rows,
        )
    )
    cb = res["codec_bytes"]
    big = res["sizes"][-1]
    other = big["bytes_total"] / big["docs"] - big["bytes"]["fragments"] / big["docs"]
    out += [
        "",
        f"Fragments per codec (measured on {_n(cfg['codec_docs'])} documents) and the total they "
        f"give at {_n(big['docs'])} with the other structures as built:",
        "",
        markdown_table(
            ["codec", "fragments B/item", f"total B/item at {_n(big['docs'])}"],
            [[c, round(v), round(v + other)] for c, v in cb.items()],
        ),
        "",
        "## Latency and recall",
        "",
    ]
    summary = []
    for s in res["sizes"]:
        full, fast = _ablation(s, "full"), _ablation(s, "fast")
        ex = _ablation(s, "exhaustive")
        summary.append(
            [
                _n(s["docs"]),
                full["p50_ms"],
                full["p95_ms"],
                fast["p50_ms"],
                s["flat"]["p50_ms"],
                ex["p50_ms"],
                round(s["speedup_full"]),
                100 * s["recall_kept"],
                s["overlap_full_exhaustive"],
                100 * full["admitted"],
            ]
        )
    out.append(
        markdown_table(
            [
                "docs",
                "full p50 ms",
                "full p95 ms",
                "fast p50 ms",
                "flat IP p50 ms",
                "exhaustive p50 ms",
                "speed-up",
                "R@10 kept %",
                "top-10 overlap",
                "admitted %",
            ],
            summary,
        )
    )
    out += [
        "",
        "R@10 kept: the full pipeline's recall@10 over exhaustive max-sim's, both over every "
        "query (ground truth: the document each query was drawn from; exhaustive by one batched "
        "pass); top-10 overlap: the share of exhaustive max-sim's top 10 the full pipeline "
        "returns. Exhaustive latency: the first queries one at a time.",
        "",
        "Filtered kNN recall@10 against exact search under the same keyword filter "
        f"(ef = num_candidates = {cfg['num_candidates']}; filters admitting <= 20,000 documents "
        "are searched exactly by design):",
        "",
        markdown_table(
            ["docs", "recall@10", "admitted %", "searches through HNSW", "queries"],
            [
                [
                    _n(s["docs"]),
                    k["recall_10"],
                    100 * k["admitted"],
                    k["through_hnsw"],
                    k["queries"],
                ]
                for s in res["sizes"]
                for k in [s["knn_vs_exact"]]
            ],
            3,
        ),
    ]
    if big.get("sweep"):
        out += [
            "",
            f"The full pipeline at {_n(big['docs'])} documents with other kNN breadths "
            "(num_candidates = HNSW efSearch) and rerank windows:",
            "",
            markdown_table(
                ["num_candidates", "rerank_window", "kNN", "R@10", "R@10 kept %", "p50 ms",
                 "p95 ms"],
                [
                    [w["num_candidates"], w["rerank_window"],
                     "exact" if w.get("exact_knn") else "HNSW", w["recall_10"],
                     100 * w["recall_kept"], w["p50_ms"], w["p95_ms"]]
                    for w in big["sweep"]
                ],
            ),
        ]  # fmt: skip
    for s in res["sizes"]:
        out += ["", f"### {_n(s['docs'])} documents: p50 / p95 ms per stage", ""]
        rows = []
        for a in s["ablations"]:
            st = a["stages"]
            rows.append(
                [a["name"], a["queries"], a["recall_10"], f"{a['p50_ms']:.2f} / {a['p95_ms']:.2f}"]
                + [
                    f"{st[k]['p50_ms']:.2f} / {st[k]['p95_ms']:.2f}" if k in st else "-"
                    for k in STAGES
                ]
            )
        f = s["flat"]
        rows.append(
            [f["name"], cfg["queries"], f["recall_10"], f"{f['p50_ms']:.2f} / {f['p95_ms']:.2f}"]
            + ["-"] * len(STAGES)
        )
        out.append(markdown_table(["configuration", "queries", "R@10", "total", *STAGES], rows))
    out += ["", "## Max-sim kernel against the matmul peak (CPU, same run)", ""]
    out.append(
        markdown_table(
            ["candidates", "ms", "max-sim GFLOP/s", "its GEMM GFLOP/s", "square matmul GFLOP/s", "% of peak"],
            [
                [r["C"], r["kernel_ms"], r["kernel_gflops"], r["gemm_gflops"], r["square_gflops"], r["pct_peak"]]
                for r in res["kernel"]
            ],
            1,
        )
    )  # fmt: skip
    out += [
        "",
        "Peak: the best square float32 matmul of the same flop count in this run, on the "
        "per-query thread count; kernel, its GEMM and the square matmul run in turn, 30 rounds, "
        "medians. Exhaustive max-sim throughput at each size (decode included): "
        + ", ".join(
            f"{_n(s['docs'])}: {s['exhaustive_gflops']:.1f} GFLOP/s"
            for s in res["sizes"]
            if "exhaustive_gflops" in s
        )
        + ".",
        "",
        f"## Targets at {_n(big['docs'])} documents",
        "",
        markdown_table(["target", "measured", "met"], targets(res)),
        "",
        "## GPU",
        "",
    ]
    gpu = res.get("gpu")
    if gpu is None:
        out.append("No CUDA device in this run: the GPU figures were not taken.")
    else:
        out.append(markdown_table(["figure", "value"], [[k, v] for k, v in gpu.items()], 3))
    return "\n".join(out) + "\n"


def plot_latency(res: dict[str, Any], file: Path) -> Path:
    import matplotlib  # noqa: PLC0415  (slow import, only when plotting)

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt  # noqa: PLC0415

    sizes = [s["docs"] for s in res["sizes"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    names = [a["name"] for a in res["sizes"][0]["ablations"]]
    for name in names:
        ys = [_ablation(s, name)["p50_ms"] for s in res["sizes"]]
        ax.plot(sizes, ys, marker="o", label=name, lw=2.5 if name == "full" else 1.2)
    ax.plot(sizes, [s["flat"]["p50_ms"] for s in res["sizes"]], marker="s", ls="--",
            label="FAISS flat IP (one vector)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gallery size (documents)")
    ax.set_ylabel("p50 latency per query (ms)")
    ax.set_title("isr: query latency against gallery size (CPU, query encoding excluded)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)
    return file


def plot_recall_speedup(res: dict[str, Any], file: Path) -> Path | None:
    """R@10 kept against speed-up over exhaustive max-sim at the largest gallery: the default
    full pipeline and each --sweep setting, one labelled point each. None without a sweep."""
    big = res["sizes"][-1]
    if not big.get("sweep"):
        return None
    import matplotlib  # noqa: PLC0415  (slow import, only when plotting)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ex_ms = _ablation(big, "exhaustive")["p50_ms"]
    full = _ablation(big, "full")
    cfg = res["config"]
    points = [(cfg["num_candidates"], cfg["rerank_window"], big["recall_kept"], full["p50_ms"])]
    points += [(w["num_candidates"], w["rerank_window"], w["recall_kept"], w["p50_ms"])
               for w in big["sweep"]]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [ex_ms / p[3] for p in points]
    ys = [100 * p[2] for p in points]
    ax.plot(xs, ys, "o", ms=7)
    for i, ((nc, rw, _, ms), x, y) in enumerate(zip(points, xs, ys)):
        ax.annotate(f"{nc}/{rw} ({ms:.0f} ms)", (x, y), textcoords="offset points",
                    xytext=(6, 4 if i % 2 else -12), fontsize=8)  # fmt: skip
    ax.axhline(100 * RECALL_KEPT, color="grey", ls="--", lw=1, label="99% of exhaustive R@10")
    ax.axvline(SPEEDUP, color="grey", ls=":", lw=1, label=f"{SPEEDUP:.0f}x")
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over exhaustive max-sim (p50)")
    ax.set_ylabel("R@10 kept (% of exhaustive max-sim)")
    ax.set_title(f"full pipeline at {_n(big['docs'])} documents: num_candidates/rerank_window")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(file, dpi=120)
    plt.close(fig)
    return file
