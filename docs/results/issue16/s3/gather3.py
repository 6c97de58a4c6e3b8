"""Session 3: the rerank's gather on a populated 1M map: fancy indexing (a fresh output each call) vs np.take into a reused buffer."""
import os, time, resource, numpy as np
P = "/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100/fragments/fragments.bin"; N = 1_000_000
tt = time.thread_time; rng = np.random.default_rng(4)
mm = np.memmap(P, np.uint8, "c", shape=(N, 32, 128)); mm._mmap.madvise(22)
buf = np.empty((256, 32, 128), np.uint8)
def flt(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
res = {"fancy": [], "take": []}; fl = {"fancy": 0, "take": 0}
for rep in range(60):
    rows = np.sort(rng.choice(N, 200, replace=False))
    for name in ("fancy", "take") if rep % 2 else ("take", "fancy"):
        f0 = flt(); c = tt()
        if name == "fancy": g = mm[rows]
        else: g = np.take(mm, rows, axis=0, out=buf[:200])
        res[name].append((tt() - c) * 1e3); fl[name] += flt() - f0
for k, v in res.items(): print(f"{k}: p50 {np.median(v[5:]):.3f} ms, faults/call {fl[k]/60:.1f}")
print(os.getloadavg())
