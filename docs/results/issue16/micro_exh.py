import time, os, numpy as np, torch
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin.embedded.index import EmbeddedIndex
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.plugin.store import maxsim as ms
set_threads(1)
idx = EmbeddedIndex.open(Path("runs/bench/g100K-sq8-sq8-m16-efc100"), readonly=True)
qs, _ = encoded_queries(EncodedWorld(n_docs=100_000), 8, seed=11)
st = idx.fragments
T = int(qs.mask.sum()); flops = 2.0 * T * len(st) * st.max_frags * st.d
a = torch.randn(512, 512)
res = {}
for rnd in range(2):
    for mode in (True, False):
        ms.INT8_CPU = mode
        c0 = time.thread_time(); s, r = idx.scorer.exhaustive_many(qs.fragments, qs.mask, st, 10); dt = time.thread_time() - c0
        res.setdefault(mode, []).append((dt, r))
        c0 = time.thread_time(); [torch.mm(a, a) for _ in range(20)]; mm = (time.thread_time() - c0)
        print(f"int8={mode} {dt:.2f}s CPU {flops/dt/1e9:.1f} GFLOP/s; fp32 square mm {20*2*512**3/mm/1e9:.1f} GFLOP/s; load {os.getloadavg()[0]:.1f}", flush=True)
print("same tops:", all(np.array_equal(res[True][0][1], x[1]) for x in res[False]))
