import numpy as np, time
N=1_000_000
X = np.memmap("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100/fast.f32", np.float32, "r", shape=(N, 256))
S = np.asarray(X[::20]).astype(np.float64)
mu = S.mean(0); C = np.cov((S-mu).T)
ev = np.sort(np.linalg.eigvalsh(C))[::-1]
cum = np.cumsum(ev)/ev.sum()
print("mean norm", np.linalg.norm(mu), "var total", ev.sum())
for d in (16,32,48,64,96,128,192): print(d, round(cum[d-1],4))
