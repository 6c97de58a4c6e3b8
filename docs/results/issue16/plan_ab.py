"""Planned vs forced-exact kNN on the 100K bench gallery, alternating order (issue 16 note).

Run from the repo root: PYTHONPATH=$PWD .venv/bin/python docs/results/issue16/plan_ab.py
(edit the gallery path: the bench workdir holding g100K-sq8-sq8-m16-efc100)."""

import time, numpy as np
from isr.app.runtime import set_threads

set_threads(1)
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin import search, SearchOptions
from isr.eval.bench import encoded_queries, EncodedWorld, ScaleConfig

cfg = ScaleConfig()
world = EncodedWorld(n_docs=100_000)
queries, truth = encoded_queries(world, 200, seed=11)
base = SearchOptions(num_candidates=cfg.num_candidates, rerank_window=cfg.rerank_window)
idx = EmbeddedIndex.open("/work/wt/speed2/runs/bench/g100K-sq8-sq8-m16-efc100", readonly=True)
idx.fast.cost = idx.fast.calibrate()
opts = {"planned": base, "exact": base.with_(knn_method="exact")}
cpu = {k: [] for k in opts}
stages = {k: {} for k in opts}
for i in range(200):
    for k, o in opts.items() if i % 2 else reversed(list(opts.items())):
        c0 = time.thread_time()
        r = search(idx, queries[i], o)
        cpu[k].append(time.thread_time() - c0)
        for st in r.profile.stages:
            stages[k].setdefault(st.name, []).append(st.ms if hasattr(st, "ms") else 0)
for k in opts:
    print(
        k,
        "p50 %.2f ms" % (1e3 * np.median(cpu[k])),
        {n: round(float(np.median(v)), 3) for n, v in stages[k].items()},
    )
