"""Session 3: where the exact filtered top-200 sits in the unfiltered ranking (1M)."""
import numpy as np
N = 1_000_000
X = np.memmap("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100/fast.f32", np.float32, "r", shape=(N, 256))
Z = np.load("/work/wt/speed2/runs/s3/adm1m.npz")
r200, r50, share = [], [], []
for i in range(20):
    q = Z["fast"][i]; a = Z[f"a{i}"]
    s = np.asarray(X @ q)
    order = np.argsort(-s)
    m = np.zeros(N, bool); m[a] = True
    pos = np.flatnonzero(m[order])  # ranks of admitted rows in the unfiltered order
    r200.append(pos[199]); r50.append(pos[49]); share.append(len(a) / N)
    print(i, f"share {len(a)/N:.3f} admitted rank of 50th {pos[49]} 200th {pos[199]} -> admitted share in top {pos[199]+1}: {200/(pos[199]+1):.3f}", flush=True)
print("median rank of 200th admitted", np.median(r200))
