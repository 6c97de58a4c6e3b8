"""Session 3: side by side in one process: two readers of one gallery, A as opened (main), B preloaded
(EmbeddedIndex.preload). Each warmed by one untimed pass of other queries (the bench's protocol), then
the same queries alternated A/B: CPU time (thread_time) per search, full pipeline, 1 thread."""
import os, sys, time, numpy as np
from collections import Counter
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions, search
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.eval.bench import warm_page_cache
from isr.eval.ablations import recall_at
n = int(sys.argv[1]); nq = int(sys.argv[2])
path = Path(f"/work/wt/speed2/runs/bench/g{n // 1000}K-sq8-sq8-m16-efc100" if n < 10**6 else "/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
w = EncodedWorld(n_docs=n)
for p in sorted(path.rglob("*")):
    if p.is_file():
        with open(p, "rb") as fh:
            while fh.read(1 << 24): pass
A = EmbeddedIndex.open(path, readonly=True); B = EmbeddedIndex.open(path, readonly=True)
t = time.perf_counter(); c = time.thread_time(); B.preload(); print(f"preload {time.perf_counter()-t:.2f}s wall {time.thread_time()-c:.2f}s CPU", flush=True)
set_threads(1)
base = SearchOptions()
wq, _ = encoded_queries(w, nq, seed=99)
for idx in (A, B):
    for i in range(len(wq)): search(idx, wq[i:i+1], base)
qs, truth = encoded_queries(w, nq, seed=11)
l0 = os.getloadavg()
cpu = {"A": [], "B": []}; tops = {"A": [], "B": []}; stages = {"A": Counter(), "B": Counter()}
for i in range(nq):
    for name, idx in (("A", A), ("B", B)) if i % 2 == 0 else (("B", B), ("A", A)):
        c = time.thread_time(); r = search(idx, qs[i:i+1], base); cpu[name].append((time.thread_time() - c) * 1e3)
        tops[name].append(tuple(h.id for h in r.hits))
        for s in r.profile.stages: stages[name][s.name] += s.ms if hasattr(s, "ms") else 0
for name in ("A", "B"):
    v = cpu[name]
    print(f"{name} ({'preloaded' if name == 'B' else 'as opened (main)'}): R@10 {recall_at(tops[name], truth):.3f} CPU p50 {np.percentile(v,50):.2f} p95 {np.percentile(v,95):.2f} mean {np.mean(v):.2f} ms", flush=True)
print("same hits:", sum(a == b for a, b in zip(tops["A"], tops["B"])), "/", nq)
print(f"ratio B/A p50 {np.percentile(cpu['B'],50)/np.percentile(cpu['A'],50):.3f}  load {l0} -> {os.getloadavg()}")
for name in ("A", "B"):
    print(name, "stage wall ms per query:", {k: round(v / nq, 2) for k, v in stages[name].items()})
