"""1M: isr full (planned / exact / graph kNN), 40 queries, CPU p50/p95, R@10 and kept vs exhaustive."""
import os, sys, time, json, numpy as np
from collections import Counter
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions, search
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.eval.bench import exhaustive_truth
from isr.eval.ablations import recall_at
nq = int(sys.argv[1]) if len(sys.argv) > 1 else 40
w = EncodedWorld(n_docs=1_000_000)
l0 = os.getloadavg()
idx = EmbeddedIndex.open(Path("runs/bench/g1M-sq8-sq8-m16-efc100"), readonly=True)
qs, truth = encoded_queries(w, nq, seed=11)
set_threads(2); t0 = time.perf_counter(); ex = exhaustive_truth(idx, qs); print(f"exhaustive truth {time.perf_counter()-t0:.0f}s", flush=True)
set_threads(1)
c = idx.fast.calibrate(); print(c, flush=True)
base = SearchOptions()
opts = {"planned": base, "exact": base.with_(knn_method="exact"), "graph": base.with_(knn_method="hnsw")}
cpu = {k: [] for k in opts}; tops = {k: [] for k in opts}; plans = Counter()
for i in range(min(5, nq)):  # warm-up
    search(idx, qs[i], base)
for i in range(nq):
    for k, o in opts.items():
        c0 = time.thread_time(); r = search(idx, qs[i], o); cpu[k].append((time.thread_time() - c0) * 1e3)
        tops[k].append(tuple(h.id for h in r.hits[:10]))
        if k == "planned": plans[[s.detail for s in r.profile.stages if s.name == "knn"][0]] += 1
exr = recall_at(ex, truth)
for k in opts:
    r10 = recall_at(tops[k], truth)
    print(f"{k}: R@10 {r10:.3f} kept {100*r10/exr:.1f}% CPU p50 {np.percentile(cpu[k],50):.2f} p95 {np.percentile(cpu[k],95):.2f} ms")
print("exhaustive R@10", exr, "plans", dict(plans), "load", l0, os.getloadavg())
