"""The peer benchmark (issue 16): isr against what a user could run instead, side by side.

Entry point: :func:`run_peers` (``isr bench --peers``). On one gallery and one set of queries,
in one process, every system answers every query in turn (round-robin, so a burst of load from
elsewhere slows all of them alike; the order is shuffled for each query, so no system is always
the one that finds the query's data cold in cache, nor always the one that follows a system that
evicts the caches), one thread, query encoding excluded:

- isr's ablations through :func:`isr.plugin.pipeline.search`: ``full`` as planned, ``full``
  with the kNN stage forced to the graph or to the exact scan, ``fast+rerank`` and
  ``keywords+fast``;
- ``flat IP + rerank``: FAISS ``IndexFlatIP`` over the fast vectors (no keywords) -> top
  ``window`` -> max-sim of the decoded fragments with the torch kernel (hand-rolled);
- ``keywords + exact + rerank``: the query's keyword rows -> their fast vectors gathered and
  multiplied (numpy) -> top ``window`` -> the same hand-rolled rerank;
- PLAID through ``fast_plaid`` (:class:`isr.eval.plaid_peer.PlaidPeer`: a worker process in
  its own virtual environment, since fast_plaid pins its own torch; docs/results/bench_peers.md
  says how to make it), over the whole gallery and restricted to the query's keyword rows
  (fast_plaid's ``subset``), when the caller hands one in; its CPU time is the worker's;
  reported as absent otherwise.

Per system: R@10 against the ground truth, R@10 kept against exhaustive max-sim (its top 10 by
one batched pass over the store), CPU time per query (``time.thread_time``) p50/p95, wall
p50, bytes per item of what it keeps; the load average at the start and the end. Two probes in
the same rounds: the exact filtered scan's bandwidth over the admitted rows, and the rerank of
``window`` candidates against a float32 matmul of the same flops.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch

from isr.encoders.record import Encoded
from isr.eval.ablations import recall_at
from isr.eval.plaid_peer import PlaidPeer
from isr.plugin import EmbeddedIndex, SearchOptions, int8_fast, maxsim, search

__all__ = ["PeerRow", "run_peers"]


@dataclass(frozen=True)
class PeerRow:
    name: str
    recall_10: float
    recall_kept: float  # recall_10 over exhaustive max-sim's
    cpu_p50_ms: float
    cpu_p95_ms: float
    wall_p50_ms: float
    bytes_per_item: float
    note: str = ""


def _handrolled_rerank(
    index: EmbeddedIndex, q: np.ndarray, qm: np.ndarray, rows: np.ndarray, size: int
) -> np.ndarray:
    """What a user writes: decode the candidates' fragments, torch max-sim, top `size` rows."""
    frags, mask = index.fragments.gather(rows)  # (C, n, d) float32, (C, n)
    qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
    s = maxsim(qt, torch.from_numpy(qm), torch.from_numpy(frags), torch.from_numpy(mask))
    top = torch.topk(s, min(size, len(rows))).indices.numpy()
    return rows[top]


def run_peers(
    index: EmbeddedIndex,
    queries: Encoded,
    truth: Sequence[str],
    exhaustive_tops: Sequence[Sequence[str]],
    num_candidates: int = 1000,
    window: int = 200,
    r_t: int = 3,
    plaid: PlaidPeer | None = None,
) -> dict[str, Any]:
    """Every system on every query, round-robin; returns the rows and the probes (module doc)."""
    n, cfg = len(index), index.config
    ids = [doc[0] for _, doc in sorted(index.docs_at(list(range(index.n_rows))).items())]
    load_start = os.getloadavg()
    base = SearchOptions(num_candidates=num_candidates, rerank_window=window, with_source=False)
    stats = index.stats()
    isr_bytes = stats["bytes_total"] / n
    b = stats["bytes"]
    frag_b = b["fragments"] / n
    flat_b = 4 * cfg.d_fast + frag_b  # its own float32 copy of the fast vectors + fragments
    kw_b = (b["fast_vectors"] + b["keywords"]) / n + frag_b

    flat = faiss.IndexFlatIP(cfg.d_fast)
    view = index.fast.vectors.view()
    for i in range(0, index.n_rows, 65_536):
        flat.add(np.ascontiguousarray(view[i : i + 65_536]))

    plans: dict[str, int] = {}
    compressed: dict[str, int] = {}  # the methods the forced compressed row ended in

    def isr_system(
        opt: SearchOptions, count: dict[str, int] | None = None
    ) -> Callable[[int], list[str]]:
        def run(i: int) -> list[str]:
            res = search(index, queries[i], opt)
            if count is not None:
                st = res.profile.stage("knn")
                if st is not None:
                    count[st.detail] = count.get(st.detail, 0) + 1
            return [h.id for h in res.hits]

        return run

    def flat_rerank(i: int) -> list[str]:
        _, rr = flat.search(queries.fast[i : i + 1], window)
        rows = rr[0][rr[0] >= 0].astype(np.int64)
        top = _handrolled_rerank(index, queries.fragments[i], queries.mask[i], rows, 10)
        return [ids[int(r)] for r in top]

    def keyword_exact_rerank(i: int) -> list[str]:
        allowed = index.keyword_rows(queries.keywords[i].top(r_t), "any") & index.alive
        if len(allowed) < 10:
            allowed = index.alive
        rows = np.asarray(allowed.to_array(), dtype=np.int64)
        s = view[rows] @ queries.fast[i]
        k = min(window, len(rows))
        cand = rows[np.argpartition(-s, k - 1)[:k]]
        top = _handrolled_rerank(index, queries.fragments[i], queries.mask[i], cand, 10)
        return [ids[int(r)] for r in top]

    def plaid_system(screened: bool) -> Callable[[int], tuple[list[str], float]]:
        assert plaid is not None

        def run(i: int) -> tuple[list[str], float]:
            sub = None
            if screened:
                allowed = index.keyword_rows(queries.keywords[i].top(r_t), "any") & index.alive
                sub = np.asarray(allowed.to_array(), dtype=np.int64) if len(allowed) >= 10 else None
            rows, cpu_s = plaid.search(queries.fragments[i], queries.mask[i], 10, sub)
            return [ids[r] for r in rows], cpu_s * 1e3

        return run

    # a system answers its ids, or (ids, CPU ms) when its work runs in another process
    System = Callable[[int], "list[str] | tuple[list[str], float]"]
    systems: dict[str, tuple[System, float, str]] = {
        "isr full (planned kNN)": (isr_system(base, count=plans), isr_bytes, ""),
        "isr full (graph kNN)": (isr_system(base.with_(knn_method="hnsw")), isr_bytes, ""),
        "isr full (exact kNN)": (isr_system(base.with_(knn_method="exact")), isr_bytes, ""),
        **(
            {
                "isr full (compressed kNN)": (
                    isr_system(base.with_(knn_method="compressed"), count=compressed),
                    isr_bytes,
                    "",
                )
            }
            if index.fast.pq is not None  # a compressed copy: from fast_index.COMPRESSED_MIN_ROWS
            else {}
        ),
        "isr fast+rerank": (
            isr_system(SearchOptions.for_ablation("fast+rerank", **_kw(base))),
            isr_bytes,
            "",
        ),
        "isr keywords+fast": (
            isr_system(SearchOptions.for_ablation("keywords+fast", **_kw(base))),
            isr_bytes,
            "",
        ),
        "FAISS flat IP + rerank": (flat_rerank, flat_b, "no keywords"),
        "keywords + exact + rerank": (keyword_exact_rerank, kw_b, "numpy gather + matvec"),
    }
    if plaid is not None:
        pb, note = plaid.bytes / n, plaid.settings.label()
        systems["PLAID (fast-plaid)"] = (plaid_system(False), pb, note)
        systems["PLAID + keyword subset"] = (
            plaid_system(True),
            pb,
            f"{note}, subset = keyword rows",
        )
    nq = len(queries)
    cpu: dict[str, list[float]] = {k: [] for k in systems}
    wall: dict[str, list[float]] = {k: [] for k in systems}
    tops: dict[str, list[tuple[str, ...]]] = {k: [] for k in systems}
    # probes: the exact filtered scan (bytes of admitted rows per second) and the rerank of
    # `window` candidates against a float32 matmul of the same flops
    scan_gbs: list[float] = []
    rr_ms: list[float] = []
    mm_ms: list[float] = []
    row_bytes = cfg.d_fast * (4 if cfg.fast_storage == "flat" else 1)
    nv = int(queries.mask.sum(1).mean())
    flops = 2.0 * nv * cfg.max_frags * cfg.d_frag * window
    side = max(1, round((flops / 2) ** (1 / 3)))
    a_mm, b_mm = torch.randn(side, side), torch.randn(side, side)
    mm_flops = 2.0 * side**3
    rng = np.random.default_rng(5)
    order_rng = np.random.default_rng(7)
    for fn, _, _ in systems.values():  # warm-up: first-call allocations, page tables
        fn(0)
    names = list(systems)
    for i in range(nq):
        # a fresh order per query (seeded): the first system to touch a query's postings and
        # fragment rows pays their cache misses, and the one after a cache-hungry system (PLAID,
        # the flat scan) finds the caches evicted. Rotating a fixed order spread the first but
        # kept every system's predecessor fixed: `full (planned)` always ran after the list's
        # last system and measured 0.5-4 ms slower than the same plan forced
        for name in [names[j] for j in order_rng.permutation(len(names))]:
            fn = systems[name][0]
            t0, c0 = time.perf_counter(), time.thread_time()
            got = fn(i)
            c1, t1 = time.thread_time(), time.perf_counter()
            if isinstance(got, tuple):  # another process's work: its own CPU time
                got, cpu_ms = got
            else:
                cpu_ms = (c1 - c0) * 1e3
            cpu[name].append(cpu_ms)
            wall[name].append((t1 - t0) * 1e3)
            tops[name].append(tuple(got[:10]))
        allowed = index.keyword_rows(queries.keywords[i].top(r_t), "any") & index.alive
        # probes in CPU time (thread_time): on a loaded machine wall time counts the waits
        if len(allowed) >= window:
            c0 = time.thread_time()
            index.fast.exact(queries.fast[i], window, allowed)
            scan_gbs.append(len(allowed) * row_bytes / max(time.thread_time() - c0, 1e-7) / 1e9)
        rows = np.sort(rng.choice(index.n_rows, window, replace=False))
        c0 = time.thread_time()
        index.scorer.score_rows(queries.fragments[i], queries.mask[i], index.fragments, rows)
        rr_ms.append((time.thread_time() - c0) * 1e3)
        c0 = time.thread_time()
        torch.mm(a_mm, b_mm)
        mm_ms.append((time.thread_time() - c0) * 1e3 * flops / mm_flops)
    ex_r10 = recall_at(exhaustive_tops, truth)
    rows_out = []
    for name, (_, nbytes, note) in systems.items():
        r10 = recall_at(tops[name], truth)
        rows_out.append(
            PeerRow(
                name,
                r10,
                r10 / ex_r10 if ex_r10 else float("nan"),
                float(np.percentile(cpu[name], 50)),
                float(np.percentile(cpu[name], 95)),
                float(np.percentile(wall[name], 50)),
                nbytes,
                note,
            )
        )
    rr, mm = float(np.median(rr_ms)), float(np.median(mm_ms))
    return {
        "docs": n,
        "queries": nq,
        "exhaustive_r10": ex_r10,
        "rows": rows_out,
        "plans": plans,
        "compressed_methods": compressed,
        "knn_cost": index.fast.cost,
        "plaid": (
            f"fast-plaid in its own process, index built in {plaid.build_seconds:.0f} s"
            f"{' (reused)' if plaid.reused else ''}"
            if plaid is not None
            else "not run (no --plaid-python)"
        ),
        "scan_gb_s_p50": float(np.median(scan_gbs)) if scan_gbs else float("nan"),
        "scan_row_bytes": row_bytes,
        "rerank_ms_p50": rr,
        "rerank_path": "int8" if int8_fast() else "float32",  # the scorer's path on this CPU
        "rerank_same_flops_mm_ms": mm,
        "rerank_pct_of_matmul": 100.0 * mm / rr if rr else float("nan"),
        "load_start": load_start,
        "load_end": os.getloadavg(),
    }


def _kw(base: SearchOptions) -> dict[str, Any]:
    return {
        "num_candidates": base.num_candidates,
        "rerank_window": base.rerank_window,
        "with_source": False,
    }


def render(res: dict[str, Any], command: str = "") -> str:
    """The peer table as markdown."""
    ls, le = res["load_start"], res["load_end"]
    out = [
        f"Peers at {res['docs']:,} documents, {res['queries']} queries, one thread, "
        f"round-robin in one process. Load average (1/5/15 min) {ls[0]:.2f}/{ls[1]:.2f}/"
        f"{ls[2]:.2f} at the start, {le[0]:.2f}/{le[1]:.2f}/{le[2]:.2f} at the end."
        + (f" Command: `{command}`." if command else ""),
        "",
        "| system | R@10 | R@10 kept % | CPU p50 ms | CPU p95 ms | wall p50 ms | B/item | note |",
        "|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in res["rows"]:
        out.append(
            f"| {r.name} | {r.recall_10:.3f} | {100 * r.recall_kept:.1f} | {r.cpu_p50_ms:.2f} "
            f"| {r.cpu_p95_ms:.2f} | {r.wall_p50_ms:.2f} | {r.bytes_per_item:,.0f} | {r.note} |"
        )
    out += [
        "",
        f"Exhaustive max-sim R@10 (the reference of 'kept'): {res['exhaustive_r10']:.3f}. "
        f"PLAID: {res['plaid']}.",
        f"kNN methods the planner chose for `full`: {res['plans']}"
        + (
            f"; the compressed row's: {res['compressed_methods']}"
            if res.get("compressed_methods")
            else ""
        )
        + f"; cost model: {res['knn_cost']}.",
        f"Exact filtered scan (in place, {res['scan_row_bytes']} B per admitted row): "
        f"{res['scan_gb_s_p50']:.2f} GB/s p50 over the admitted rows (CPU time).",
        f"Rerank of the window through the scorer (gather + "
        f"{res.get('rerank_path', 'int8')} max-sim): "
        f"{res['rerank_ms_p50']:.3f} ms CPU p50 (random rows); a float32 matmul of the same flops "
        f"{res['rerank_same_flops_mm_ms']:.3f} ms: {res['rerank_pct_of_matmul']:.0f}%.",
    ]
    return "\n".join(out) + "\n"
