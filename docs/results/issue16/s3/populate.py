"""Session 3: prefaulting the rerank's memory maps (MADV_POPULATE_READ) at 1M: its cost, and the gather after it."""
import os, time, resource, numpy as np
MADV_POPULATE_READ = 22
P = "/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100/"; N = 1_000_000
tt = time.thread_time
rng = np.random.default_rng(2)
for f, shape in [("fragments/fragments.bin", (N, 32, 128)), ("fast.f32", None)]:
    mm = np.memmap(P + f, np.uint8 if shape else np.float32, "c", shape=shape or (N, 256))
    w = time.perf_counter(); c = tt(); mm._mmap.madvise(MADV_POPULATE_READ); print(f"{f}: populate {os.path.getsize(P+f)/2**30:.2f} GiB: {time.perf_counter()-w:.2f}s wall, {tt()-c:.2f}s CPU", flush=True)
    for rep in range(3):
        rows = np.sort(rng.choice(N, 200, replace=False))
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        c = tt(); g = mm[rows]; d1 = tt() - c
        print(f"  200 rows after populate {d1*1e3:.3f} ms (minor faults {resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0})", flush=True)
print(os.getloadavg())
