"""Recall and latency of each pipeline ablation on an index with known ground truth.

Entry point: :func:`run_ablations`, used by `isr demo` and the engine benchmark.
Latency is the pipeline's own (query encoding excluded); recall@k counts a query as found
when its ground-truth id is among the top k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from isr.encoders.record import Encoded
from isr.plugin import ABLATIONS, EmbeddedIndex, SearchOptions, search

__all__ = ["AblationRow", "recall_at", "run_ablations"]


def recall_at(
    tops: Sequence[Sequence[str]], truth: Sequence[str], k: int = 10, n: int | None = None
) -> float:
    """Share of the first n queries (all by default) whose truth is in their top k ids."""
    n = len(tops) if n is None else min(n, len(tops))
    return sum(truth[i] in tops[i][:k] for i in range(n)) / max(n, 1)


@dataclass(frozen=True)
class AblationRow:
    name: str
    recall_1: float
    recall_10: float
    p50_ms: float
    p95_ms: float
    admitted: float  # mean share of the gallery the filters admitted
    relaxed: float  # share of queries whose keyword filter was relaxed
    hits: tuple[tuple[str, ...], ...]  # top ids per query, for agreement checks
    stages: tuple[tuple[str, float, float], ...] = ()  # (stage, p50 ms, p95 ms) per stage

    def recall_at(self, truth: Sequence[str], k: int = 10, n: int | None = None) -> float:
        """Recall@k over the first n queries (all by default), from the stored top ids."""
        return recall_at(self.hits, truth, k, n)


def run_ablations(
    index: EmbeddedIndex,
    queries: Encoded,
    truth: Sequence[str],
    base: SearchOptions | None = None,
    names: Sequence[str] = tuple(ABLATIONS),
    progress: bool = True,
) -> list[AblationRow]:
    base = base or SearchOptions()
    out = []
    for name in names:
        opt = SearchOptions.for_ablation(
            name,
            size=max(base.size, 10),
            num_candidates=base.num_candidates,
            rerank_window=base.rerank_window,
            keywords=base.keywords,
            exact_threshold=base.exact_threshold,
            knn_method=base.knn_method,
            with_source=False,
        )
        search(index, queries[0], opt)  # warm-up (first-call allocations, thread pools)
        ms, adm, rel, tops = [], [], 0, []
        stage_ms: dict[str, list[float]] = {}
        for i in tqdm(range(len(queries)), desc=f"{name:>20}", disable=not progress, unit="q"):
            res = search(index, queries[i], opt)
            ids = [h.id for h in res.hits]
            ms.append(res.profile.took_ms)
            adm.append(res.total / max(res.profile.gallery, 1))
            rel += res.profile.relaxed
            tops.append(tuple(ids[:10]))
            for st in res.profile.stages:
                stage_ms.setdefault(st.name, []).append(st.ms)
        n = len(queries)
        out.append(
            AblationRow(
                name,
                recall_at(tops, truth, 1),
                recall_at(tops, truth, 10),
                float(np.percentile(ms, 50)),
                float(np.percentile(ms, 95)),
                float(np.mean(adm)),
                rel / n,
                tuple(tops),
                tuple(
                    (k, float(np.percentile(v, 50)), float(np.percentile(v, 95)))
                    for k, v in stage_ms.items()
                ),
            )
        )
    return out
