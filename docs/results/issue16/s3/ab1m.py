"""Session 3, 1M side by side in one process, CPU time per search (1 thread), full pipeline defaults.
A: a reader as main opens it, kNN exact (main's planner picks exact for every 1M query);
B: the same gallery preloaded + calibrated: exact forced / compressed forced / planned.
Queries: encoded_queries(seed 11), so 40 are quick1m's (exhaustive R@10 0.825, session 2)."""
import os, sys, time, numpy as np
from collections import Counter
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions, search
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.eval.ablations import recall_at
nq = int(sys.argv[1]); EXH = float(sys.argv[2]) if len(sys.argv) > 2 else 0.825
path = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
w = EncodedWorld(n_docs=1_000_000)
for p in sorted(path.rglob("*")):
    if p.is_file():
        with open(p, "rb") as fh:
            while fh.read(1 << 24): pass
A = EmbeddedIndex.open(path, readonly=True); B = EmbeddedIndex.open(path, readonly=True); B.preload()
set_threads(1)
print(B.fast.calibrate(), flush=True)
base = SearchOptions()
runs = {"A main (as opened, exact)": (A, base.with_(knn_method="exact")),
        "B preloaded, exact": (B, base.with_(knn_method="exact")),
        "B preloaded, compressed": (B, base.with_(knn_method="compressed")),
        "B preloaded, planned": (B, base)}
wq, _ = encoded_queries(w, nq, seed=99)
for idx in (A, B):
    for i in range(len(wq)): search(idx, wq[i:i+1], base)
qs, truth = encoded_queries(w, nq, seed=11)
l0 = os.getloadavg()
cpu = {k: [] for k in runs}; tops = {k: [] for k in runs}; plans = Counter(); knn_ms = {k: [] for k in runs}
names = list(runs)
for i in range(nq):
    order = names if i % 2 == 0 else names[::-1]
    for name in order:
        idx, o = runs[name]
        c = time.thread_time(); r = search(idx, qs[i:i+1], o); cpu[name].append((time.thread_time() - c) * 1e3)
        tops[name].append(tuple(h.id for h in r.hits))
        st = r.profile.stage("knn"); knn_ms[name].append(st.ms)
        if name.endswith("planned"): plans[st.detail] += 1
ref = tops[names[0]]
for name in names:
    v = cpu[name]; r10 = recall_at(tops[name], truth)
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tops[name], ref)])
    print(f"{name:28s} R@10 {r10:.3f} ({100*r10/EXH:.1f}% of exhaustive {EXH}) CPU p50 {np.percentile(v,50):6.2f} p95 {np.percentile(v,95):6.2f} ms | top-10 overlap with A {agree:.3f} | knn stage wall p50 {np.median(knn_ms[name]):.1f}", flush=True)
p0 = np.percentile(cpu[names[0]], 50)
print("ratios p50 vs A:", {n: round(np.percentile(cpu[n], 50) / p0, 3) for n in names})
print("plans", dict(plans), "load", l0, "->", os.getloadavg())
