"""Single-query exhaustive max-sim at 1M (one thread, CPU time) beside the full pipeline, for the
issue-16 ratio "full >= 300x faster than exhaustive"."""
import sys, time
from pathlib import Path
import numpy as np
from isr.app.runtime import set_threads
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.plugin import EmbeddedIndex, SearchOptions, search
set_threads(1)
n = int(sys.argv[2]); nq = int(sys.argv[3])
world = EncodedWorld(n_docs=n)
queries, truth = encoded_queries(world, 200, seed=11)
with EmbeddedIndex.open(Path(sys.argv[1]), readonly=True) as idx:
    idx.preload()
    ex = SearchOptions.for_ablation("exhaustive", with_source=False)
    full = SearchOptions(with_source=False)
    search(idx, queries[0], full); search(idx, queries[0], ex)
    te, tf = [], []
    for i in range(1, nq + 1):
        c = time.thread_time(); search(idx, queries[i], ex); te.append(time.thread_time() - c)
        c = time.thread_time(); search(idx, queries[i], full); tf.append(time.thread_time() - c)
        print(f"q{i}: exhaustive {te[-1]*1e3:.0f} ms, full {tf[-1]*1e3:.2f} ms", flush=True)
    e, f = np.median(te) * 1e3, np.median(tf) * 1e3
    print(f"{n:,} docs, {nq} queries, one thread, CPU p50: exhaustive {e:.0f} ms, full {f:.2f} ms: {e/f:.0f}x")
