"""Session 4: exhaustive max-sim top-10 of a seeded query set at 1M (one thread), saved as JSON
for the R@10 "kept vs exhaustive" of the tuning runs. usage: exh_truth.py seed nq out.json"""
import json, os, sys, time
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.eval.bench import exhaustive_truth
from isr.eval.ablations import recall_at
seed, nq, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
path = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
idx = EmbeddedIndex.open(path, readonly=True)
qs, truth = encoded_queries(EncodedWorld(n_docs=idx.n_rows), nq, seed=seed)
set_threads(1)
tops = []
for i in range(0, nq, 10):
    t = time.time(); tops += exhaustive_truth(idx, qs[i:i + 10])
    print(i + 10, f"{time.time() - t:.0f}s", os.getloadavg(), flush=True)
    out.write_text(json.dumps({"seed": seed, "truth": truth[:len(tops)], "tops": tops,
                               "r10": recall_at(tops, truth[:len(tops)])}))
print("R@10", recall_at(tops, truth))
