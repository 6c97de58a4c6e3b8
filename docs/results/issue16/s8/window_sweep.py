"""The 1M full pipeline's rerank window (candidates max-sim rescores) against R@10 and CPU
time, on other queries than the bench report's (seed 21, as session 4 chose its settings), one
thread, the gallery preloaded, one untimed warm pass (seed 99), the windows alternated per query.
usage: window_sweep.py <gallery> [nq] [windows, e.g. 100,150,200] [seed]"""

import sys, time
from pathlib import Path
import numpy as np
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions, search
from isr.eval.ablations import run_ablations
from isr.ingest.encoded_world import EncodedWorld, encoded_queries

path = Path(sys.argv[1])
nq = int(sys.argv[2]) if len(sys.argv) > 2 else 150
windows = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "100,150,200").split(",")]
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 21
idx = EmbeddedIndex.open(path, readonly=True)
idx.preload()
w = EncodedWorld(n_docs=idx.n_rows)
set_threads(1)
qs, truth = encoded_queries(w, nq, seed=seed)
wq, wt = encoded_queries(w, 50, seed=99)
run_ablations(idx, wq, wt, SearchOptions(), ["full"], progress=False)
opts = {
    rw: SearchOptions(num_candidates=1000, rerank_window=rw, with_source=False) for rw in windows
}
cpu = {rw: [] for rw in windows}
hit = {rw: 0 for rw in windows}
meth = {rw: {} for rw in windows}
rng = np.random.default_rng(0)
l0 = __import__("os").getloadavg()
for i in range(nq):
    for rw in [windows[j] for j in rng.permutation(len(windows))]:
        c0 = time.thread_time()
        r = search(idx, qs[i], opts[rw])
        cpu[rw].append((time.thread_time() - c0) * 1e3)
        hit[rw] += truth[i] in [h.id for h in r.hits[:10]]
        d = r.profile.stage("knn").detail
        meth[rw][d] = meth[rw].get(d, 0) + 1
print(f"1M, seed {seed}, {nq} queries, load {l0} -> {__import__('os').getloadavg()}")
print("| rerank window | R@10 | CPU p50 ms | p95 ms | kNN methods |\n|--:|--:|--:|--:|---|")
for rw in windows:
    print(
        f"| {rw} | {hit[rw] / nq:.3f} | {np.percentile(cpu[rw], 50):.2f} | {np.percentile(cpu[rw], 95):.2f} | {meth[rw]} |"
    )
