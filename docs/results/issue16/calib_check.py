"""Calibrate 5 times on the 100K gallery under today's load; then time gather/exact/plan."""
import os, sys, time
from collections import Counter
from pathlib import Path
import numpy as np
from isr.app.runtime import set_threads
from isr.plugin.embedded.index import EmbeddedIndex
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
set_threads(1)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
name = "g100K" if n == 100_000 else "g1M"
idx = EmbeddedIndex.open(Path(f"runs/bench/{name}-sq8-sq8-m16-efc100"), readonly=True)
w = EncodedWorld(n_docs=n)
qs, _ = encoded_queries(w, 60, seed=11)
sets = [idx.keyword_rows(qs.keywords[i].top(3), "any") & idx.alive for i in range(len(qs))]
print("load", os.getloadavg(), "admitted mean", np.mean([len(s) for s in sets]))
costs = []
for r in range(5):
    t0 = time.perf_counter(); c = idx.fast.calibrate(seed=r); dt_ = time.perf_counter() - t0
    plans = Counter(idx.fast.plan(200, 1000, len(s)) for s in sets)
    print(f"calib {r}: {dt_:.2f}s load {c.load_avg:.1f} gather {c.gather_us:.0f}us+{c.gather_row_ns:.0f}ns "
          f"scan {c.scan_bit_ns*n/1e3:.0f}us+{c.scan_row_ns:.0f}ns graph {c.graph_us:.0f}+{c.graph_ns:.0f} plans {dict(plans)}", flush=True)
res = {m: [] for m in ("gather", "exact")}
for rnd in range(3):
    for i, a in enumerate(sets):
        for m in res:
            t0 = time.thread_time()
            idx.knn(qs.fast[i], 200, 1000, a, None, None, m)
            res[m].append((time.thread_time() - t0) * 1e3)
for m in res: print(m, "cpu p50 %.2f ms" % np.percentile(res[m], 50))
print("load", os.getloadavg())
