"""Session 3: cost of first touches in the rerank's memory maps (1M store): 200 random rows gathered, fresh map vs touched map."""
import os, time, resource, numpy as np
P = "/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100/fragments/fragments.bin"; N = 1_000_000
tt = time.thread_time
def faults(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_minflt, r.ru_majflt
rng = np.random.default_rng(1)
for mode in ("c", "r"):
    mm = np.memmap(P, np.uint8, mode, shape=(N, 32, 128))
    for rep in range(3):
        rows = np.sort(rng.choice(N, 200, replace=False))
        f0 = faults(); c = tt(); g = mm[rows]; d1 = tt() - c; f1 = faults()
        c = tt(); g = mm[rows]; d2 = tt() - c
        print(f"mode {mode}: 200 rows first touch {d1*1e3:.2f} ms (minor {f1[0]-f0[0]}, major {f1[1]-f0[1]}), again {d2*1e3:.3f} ms", flush=True)
    del mm
print(os.getloadavg())
