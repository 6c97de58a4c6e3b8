import os, sys, time, numpy as np, faiss
from pathlib import Path
faiss.omp_set_num_threads(1)
P = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
Z = np.load("/work/wt/speed2/runs/s3/adm1m.npz"); N = 1_000_000
X = np.memmap(P / "fast.f32", np.float32, "r", shape=(N, 256))
Q = Z["fast"][:10].astype(np.float32); A = [Z[f"a{i}"].astype(np.int64) for i in range(10)]
tt = time.thread_time
def bitmap(a):
    m = np.zeros(N, bool); m[a] = True; return np.packbits(m, bitorder="little")
for name, make in [("rbqfs1", lambda: faiss.IndexRaBitQFastScan(256, faiss.METRIC_INNER_PRODUCT)),
                   ("pqfs64", lambda: faiss.IndexPQFastScan(256, 64, 4, faiss.METRIC_INNER_PRODUCT)),
                   ("pqfs128", lambda: faiss.IndexPQFastScan(256, 128, 4, faiss.METRIC_INNER_PRODUCT))]:
    R = make(); t = time.perf_counter()
    R.train(np.ascontiguousarray(X[::20]))
    for j in range(0, N, 100_000): R.add(np.ascontiguousarray(X[j:j+100_000]))
    print(name, f"build {time.perf_counter()-t:.1f}s", flush=True)
    for i in range(3):
        c = tt(); R.search(Q[i:i+1], 4000); print(f"  unfiltered W4000 {1e3*(tt()-c):.2f} ms", flush=True)
    for i in range(3):
        bm = bitmap(A[i]); sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
        p = faiss.RaBitQSearchParameters() if name.startswith("rbq") else faiss.SearchParameters(); p.sel = sel
        try:
            c = tt(); D, I = R.search(Q[i:i+1], 4000, params=p); d = tt() - c
            ok = np.isin(I[0][I[0] >= 0], A[i]).mean()
            print(f"  filtered W4000 {1e3*d:.2f} ms, share of results admitted {ok:.3f}", flush=True)
        except Exception as e:
            print("  filtered:", str(e)[:200]); break
    del R
