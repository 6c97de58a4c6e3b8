"""Session 4: main's compressed kNN against this branch's at 1M, side by side in one process (one
reader, preloaded as `isr serve` opens it), full pipeline defaults, CPU time per search (one
thread). main: FastIndex.compressed as of 31a90eb (float32 rescoring of every admitted row of the
window) over main's 128 x 4-bit PQ copy (runs/bench/pq128_product.faiss, built by main's
build_compressed); branch: this code over the copy it builds (64 x 4-bit, the gallery's
pq.faiss). Each planned variant is calibrated on its own code (as the bench does).
Pass 1 (report set, seed 11, the bench's queries): every variant on every query, the order
alternating per query: R@10 and CPU. Pass 2 (seed 41): each variant on its own queries (query
j -> variant j mod V), so each search meets its rows cold, as a server's new queries do.
usage: ab1m.py nq [exhaustive R@10 of the seed-11 set]"""
import os, sys, time, types
from collections import Counter, defaultdict
from pathlib import Path
import numpy as np, faiss
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions, search
from isr.plugin.embedded import fast_index
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.eval.ablations import recall_at
sys.path.insert(0, str(Path(__file__).parent))
from main_knn import main_compressed  # noqa: E402  (main's method, verbatim)

nq = int(sys.argv[1]); EXH = float(sys.argv[2]) if len(sys.argv) > 2 else None
path = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
idx = EmbeddedIndex.open(path, readonly=True); idx.preload()
fi = idx.fast
set_threads(1)
pq_main = faiss.read_index("/work/wt/speed2/runs/bench/pq128_product.faiss"); pq_branch = fi.pq
print("copies: main M", pq_main.M, "branch M", pq_branch.M, flush=True)
cost = {}
def use(name):
    if name.startswith("main"):
        fi.pq = pq_main; fi.compressed = types.MethodType(main_compressed, fi)
    else:
        fi.pq = pq_branch
        fi.__dict__.pop("compressed", None)
    if name.split()[0] in cost:
        fi.cost = cost[name.split()[0]]
for side in ("main", "branch"):
    use(side); cost[side] = fi.calibrate()
    print(side, "calibrated:", {k: round(v, 1) for k, v in vars(cost[side]).items() if k.startswith("compressed") or k.startswith("scan")}, flush=True)
base = SearchOptions()
V = {"main planned": base, "main compressed": base.with_(knn_method="compressed"),
     "branch planned": base, "branch compressed": base.with_(knn_method="compressed")}
names = list(V)
world = EncodedWorld(n_docs=idx.n_rows)
wq, _ = encoded_queries(world, 20, seed=99)
for nm in names:
    use(nm)
    for i in range(len(wq)): search(idx, wq[i:i+1], V[nm])
qs, truth = encoded_queries(world, nq, seed=11)
cpu = defaultdict(list); tops = defaultdict(list); plans = defaultdict(Counter)
l0 = os.getloadavg()
for i in range(nq):
    for nm in (names if i % 2 == 0 else names[::-1]):
        use(nm)
        c = time.thread_time(); r = search(idx, qs[i:i+1], V[nm]); cpu[nm].append((time.thread_time() - c) * 1e3)
        tops[nm].append(tuple(h.id for h in r.hits)); plans[nm][r.profile.stage("knn").detail] += 1
print(f"pass 1: seed 11, {nq} queries, every variant on each (alternating order), load {l0} -> {os.getloadavg()}")
ref = tops["main planned"]
for nm in names:
    v = cpu[nm]; r10 = recall_at(tops[nm], truth)
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tops[nm], ref)])
    print(f"  {nm:18s} R@10 {r10:.3f}" + (f" ({100*r10/EXH:.1f}% of exhaustive {EXH})" if EXH else "") +
          f" CPU p50 {np.percentile(v,50):6.2f} p95 {np.percentile(v,95):6.2f} | top-10 overlap with main {agree:.3f} | {dict(plans[nm])}", flush=True)
p0 = np.percentile(cpu["main planned"], 50)
print("  ratios p50 vs main planned:", {n: round(np.percentile(cpu[n], 50) / p0, 3) for n in names})
tq, _ = encoded_queries(world, nq * len(names), seed=41)
cpu2 = defaultdict(list)
l0 = os.getloadavg()
for j in range(len(tq)):
    nm = names[j % len(names)]; use(nm)
    c = time.thread_time(); search(idx, tq[j:j+1], V[nm]); cpu2[nm].append((time.thread_time() - c) * 1e3)
print(f"pass 2: seed 41, {nq} own queries per variant, load {l0} -> {os.getloadavg()}")
for nm in names:
    v = cpu2[nm]
    print(f"  {nm:18s} CPU p50 {np.percentile(v,50):6.2f} p95 {np.percentile(v,95):6.2f}", flush=True)
p0 = np.percentile(cpu2["main planned"], 50)
print("  ratios p50 vs main planned:", {n: round(np.percentile(cpu2[n], 50) / p0, 3) for n in names})
