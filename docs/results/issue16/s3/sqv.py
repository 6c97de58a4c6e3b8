"""Session 3: FAISS flat-code variants under the keyword bitmap at 1M (recall@200 after f32 rescoring, CPU, 1 thread)."""
import os, sys, time, numpy as np, faiss
from pathlib import Path
faiss.omp_set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent)); from screens import load
NQ = int(sys.argv[1])
P, N, X, Q, A, tgt, truth, K = load(NQ)
tt = time.thread_time
def bitmap(a):
    m = np.zeros(N, bool); m[a] = True; return np.packbits(m, bitorder="little")
def rescore(rows, q, k=K):
    rows = np.sort(rows); s = np.asarray(X[rows]) @ q
    return rows[np.argsort(-s)[:k]]
SQ = faiss.ScalarQuantizer
S0 = np.asarray(X[::20]).astype(np.float64); ev, V = np.linalg.eigh(np.cov(S0.T)); V = V[:, ::-1].astype(np.float32)  # PCA, by variance
for spec in sys.argv[2].split(","):
    name, W, dd = spec.split(":"); W = int(W); dd = int(dd)
    proj = V[:, :dd]
    qt = {"sq4": SQ.QT_4bit_uniform, "sq6": SQ.QT_6bit, "sq8": SQ.QT_8bit_uniform, "sq8d": SQ.QT_8bit_direct_signed, "fp16": SQ.QT_fp16, "bf16": SQ.QT_bf16}[name]
    R = faiss.IndexScalarQuantizer(dd, qt, faiss.METRIC_INNER_PRODUCT)
    R.train(np.ascontiguousarray(X[::50]) @ proj)
    for j in range(0, N, 100_000): R.add(np.ascontiguousarray(X[j:j+100_000]) @ proj)
    ts, rec, hit = [], [], []
    for i in list(range(2)) + list(range(NQ)):
        c = tt()
        bm = bitmap(A[i]); sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
        p = faiss.SearchParameters(); p.sel = sel
        D, I = R.search(Q[i:i+1] @ proj, W, params=p)
        got = rescore(I[0][I[0] >= 0], Q[i])
        ts.append((tt() - c) * 1e3); rec.append(len(truth[i] & set(got.tolist())) / K); hit.append(tgt[i] in set(got.tolist()))
    ts, rec, hit = ts[2:], rec[2:], hit[2:]
    c = tt(); R.search(Q[:1] @ proj, W); uf = (tt() - c) * 1e3
    print(f"{name} d{dd} W{W}: recall@200 {np.mean(rec):.4f} min {np.min(rec):.3f} target@200 {np.mean(hit):.3f} CPU p50 {np.percentile(ts,50):6.2f} p95 {np.percentile(ts,95):6.2f} ms; unfiltered 1M {uf:.1f} ms; load {os.getloadavg()[0]:.1f}", flush=True)
    del R
