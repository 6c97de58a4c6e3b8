"""Session 3: filtered kNN alternatives at 1M (the keyword screens of real queries), CPU time, 1 thread."""
import os, sys, time, numpy as np, faiss, torch
from pathlib import Path
faiss.omp_set_num_threads(1); torch.set_num_threads(1)
P = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
Z = np.load("/work/wt/speed2/runs/s3/adm1m.npz")
NQ = int(sys.argv[1]) if len(sys.argv) > 1 else 20
which = sys.argv[2].split(",") if len(sys.argv) > 2 else ["base"]
N = 1_000_000
X = np.memmap(P / "fast.f32", np.float32, "r", shape=(N, 256))
Q = Z["fast"][:NQ].astype(np.float32)
A = [Z[f"a{i}"].astype(np.int64) for i in range(NQ)]
tt = time.thread_time
K = 200
truth = []
for i in range(NQ):
    s = np.asarray(X[A[i]]) @ Q[i]
    o = np.argsort(-s)[:K]; truth.append(set(A[i][o].tolist()))
print("truth done", flush=True)
def bitmap(a):
    m = np.zeros(N, bool); m[a] = True; return np.packbits(m, bitorder="little")
def rescore(rows, q, k=K):
    rows = np.sort(rows); s = np.asarray(X[rows]) @ q
    return rows[np.argsort(-s)[:k]]
def report(name, f):
    for i in range(2): f(i)
    ts, rec = [], []
    for i in range(NQ):
        c = tt(); got = f(i); ts.append((tt() - c) * 1e3)
        rec.append(len(truth[i] & set(got.tolist())) / K)
    print(f"{name:34s} recall@200 {np.mean(rec):.4f} min {np.min(rec):.3f}  CPU p50 {np.percentile(ts,50):7.2f} p95 {np.percentile(ts,95):7.2f} ms  load {os.getloadavg()[0]:.1f}", flush=True)
if "base" in which or "subset" in which:
    t = time.perf_counter(); H = faiss.read_index(str(P / "hnsw.faiss")); print(f"read hnsw {time.perf_counter()-t:.1f}s", flush=True)
    S = faiss.downcast_index(H.storage)
    def base(i):
        bm = bitmap(A[i]); sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
        p = faiss.SearchParameters(); p.sel = sel
        D, I = S.search(Q[i:i+1], 2 * K + 64, params=p)
        return rescore(I[0][I[0] >= 0], Q[i])
    report("sq8 bitmap scan (main)", base)
    def nosel(i):
        D, I = S.search(Q[i:i+1], 2 * K + 64)
        return I[0]
    for i in range(3):
        c = tt(); nosel(i); print(f"sq8 unfiltered 1M scan {1e3*(tt()-c):.2f} ms", flush=True)
    if "subset" in which:
        def subset(i):
            a = A[i]
            D = np.empty((1, 2 * K + 64), np.float32); I = np.empty((1, 2 * K + 64), np.int64)
            S.search_subset(1, faiss.swig_ptr(Q[i:i+1]), len(a), faiss.swig_ptr(a), 2 * K + 64, faiss.swig_ptr(D), faiss.swig_ptr(I))
            return rescore(I[0][I[0] >= 0], Q[i])
        report("sq8 search_subset", subset)
for spec in which:
    if not spec.startswith("rbq"): continue
    # rbq<bits>[fs] e.g. rbq1, rbq4
    bits = int(spec[3]); fs = spec.endswith("fs")
    t = time.perf_counter(); c0 = tt()
    R = faiss.IndexRaBitQ(256, faiss.METRIC_INNER_PRODUCT, bits)
    R.train(np.ascontiguousarray(X[::10]))
    for j in range(0, N, 100_000): R.add(np.ascontiguousarray(X[j:j+100_000]))
    print(f"build {spec}: {time.perf_counter()-t:.1f}s wall, code_size {R.code_size}", flush=True)
    for qb in (8,):
        for W in (1000, 2000, 4000):
            def rb(i, W=W, qb=qb):
                bm = bitmap(A[i]); sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
                p = faiss.RaBitQSearchParameters(); p.sel = sel; p.qb = qb
                D, I = R.search(Q[i:i+1], W, params=p)
                return rescore(I[0][I[0] >= 0], Q[i])
            report(f"{spec} qb{qb} W{W} +f32 rescore", rb)
    del R
