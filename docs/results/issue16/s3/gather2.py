"""Session 3: 200 random 4 KiB rows gathered: file map (populated) vs anonymous memory, preallocated output."""
import os, time, resource, numpy as np
P = "/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100/fragments/fragments.bin"; N = 1_000_000
tt = time.thread_time; rng = np.random.default_rng(3)
mm = np.memmap(P, np.uint8, "c", shape=(N, 4096)); mm._mmap.madvise(22)
sub = 250_000
anon = np.array(mm[:sub])  # 1 GiB anonymous copy of the first quarter
mmq = mm[:sub]
out = np.empty((200, 4096), np.uint8)
for name, arr in [("file map", mmq), ("anonymous", anon), ("file map", mmq), ("anonymous", anon)]:
    ts = []
    for rep in range(20):
        rows = np.sort(rng.choice(sub, 200, replace=False))
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c = tt(); np.take(arr, rows, axis=0, out=out); ts.append((tt() - c) * 1e3)
        fl = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
    print(f"{name}: 200 x 4 KiB p50 {np.median(ts):.3f} ms min {np.min(ts):.3f} (faults last rep {fl})", flush=True)
print(os.getloadavg())
