"""Dump the 1M queries' fast vectors and admitted rows (the keyword screen), for kNN micro-benchmarks."""
import sys, numpy as np
from pathlib import Path
from isr.plugin import EmbeddedIndex, SearchOptions
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
nq = int(sys.argv[1])
w = EncodedWorld(n_docs=1_000_000)
idx = EmbeddedIndex.open(Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100"), readonly=True)
qs, truth = encoded_queries(w, nq, seed=11)
base = SearchOptions(); opt = base.with_(keywords=base.keywords.over(idx.config.keywords))
out = {"fast": qs.fast}
for i in range(nq):
    labels = opt.keywords.select(qs.keywords[i], idx)
    kw = opt.keywords
    out[f"a{i}"] = np.asarray(idx.keyword_rows(labels, kw.mode, kw.minimum_should_match, kw.r_i).to_array(), np.uint32)
np.savez("/work/wt/speed2/runs/s3/adm1m.npz", **out)
print([len(out[f"a{i}"]) for i in range(nq)])
