import os, time, numpy as np, faiss
from pathlib import Path
faiss.omp_set_num_threads(1)
P = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100"); N = 1_000_000
Z = np.load("/work/wt/speed2/runs/s3/adm1m.npz")
X = np.memmap(P / "fast.f32", np.float32, "r", shape=(N, 256))
Xm = np.array(X)  # in anonymous memory
tt = time.thread_time
for name, Y in [("memmap f32", X), ("in-memory f32", Xm)]:
    ts = []
    for i in range(12):
        q = Z["fast"][i:i+1].astype(np.float32); a = Z[f"a{i}"].astype(np.int64)
        k = 200; vals = np.empty((1, k), np.float32); ids = np.empty((1, k), np.int64)
        c = tt()
        faiss.knn_inner_products_by_idx(faiss.swig_ptr(q), faiss.swig_ptr(Y), faiss.swig_ptr(a), 256, 1, N, len(a), k, faiss.swig_ptr(vals), faiss.swig_ptr(ids), len(a))
        ts.append((tt() - c) * 1e3)
        if i == 0:
            s = np.asarray(X[a]) @ q[0]; exact = set(a[np.argsort(-s)[:k]].tolist()); print("check", len(exact & set(ids[0].tolist())) / k)
    ts = ts[2:]
    print(f"{name}: knn_inner_products_by_idx p50 {np.median(ts):.2f} ms, per admitted row {np.median(ts)*1e6/np.mean([len(Z[f'a{i}']) for i in range(12)]):.0f} ns, load {os.getloadavg()[0]:.1f}", flush=True)
