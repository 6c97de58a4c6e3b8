"""Session 8 A/B, one process: the rerank of 200 random rows of the 1M store through main's
score_rows (maxsim_old.py: `git show 4f4fac1:isr/plugin/store/maxsim.py`) and through the lean CPU
path, alternated per query, each on its own fresh random rows (cold), one thread.
usage: rr_lean_ab.py <gallery> <maxsim_old.py> [rounds]"""

import importlib.util, sys, time
from pathlib import Path
import numpy as np
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex
from isr.plugin.store.maxsim import MaxSimScorer
from isr.ingest.encoded_world import EncodedWorld, encoded_queries

spec = importlib.util.spec_from_file_location("maxsim_old", sys.argv[2])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
idx = EmbeddedIndex.open(Path(sys.argv[1]), readonly=True)
idx.preload()
set_threads(1)
n, st = idx.n_rows, idx.fragments
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 200
qs, _ = encoded_queries(EncodedWorld(n_docs=n), 60, seed=11)
scorers = {"main": old.MaxSimScorer("cpu"), "lean": MaxSimScorer("cpu")}
rng = np.random.default_rng(3)
T = {k: [] for k in scorers}
for r in range(rounds):
    for name in ("main", "lean") if r % 2 else ("lean", "main"):
        rows = np.sort(rng.choice(n, 200, replace=False))
        i = r % 60
        c0 = time.thread_time()
        s = scorers[name].score_rows(qs.fragments[i], qs.mask[i], st, rows)
        T[name].append((time.thread_time() - c0) * 1e3)
rows = np.sort(rng.choice(n, 200, replace=False))
a = scorers["main"].score_rows(qs.fragments[0], qs.mask[0], st, rows)
b = scorers["lean"].score_rows(qs.fragments[0], qs.mask[0], st, rows)
print("max |main - lean| score", float(np.abs(a - b).max()), "of scores ~", float(np.abs(a).mean()))
for k, v in T.items():
    print(
        f"{k}: CPU ms p50 {np.percentile(v, 50):.3f} mean {np.mean(v):.3f} p95 {np.percentile(v, 95):.3f}"
    )
