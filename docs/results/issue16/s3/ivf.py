"""Session 3: IVF-sq8 under the keyword bitmap at 1M: recall@200 vs exact, CPU time (1 thread)."""
import os, sys, time, numpy as np, faiss
from pathlib import Path
faiss.omp_set_num_threads(int(os.environ.get("BUILD_THREADS", "1")))
sys.path.insert(0, str(Path(__file__).parent)); from screens import load
NQ = int(sys.argv[1]); nlist = int(sys.argv[2])
P, N, X, Q, A, tgt, truth, K = load(NQ)
tt = time.thread_time
print('exact: target in top200', np.mean([tgt[i] in truth[i] for i in range(NQ)]), 'target admitted', np.mean([tgt[i] in set(A[i].tolist()) for i in range(NQ)]), flush=True)
f = P.parent / f"ivf{nlist}.faiss"
if f.exists():
    R = faiss.read_index(str(f))
else:
    t = time.perf_counter()
    quant = faiss.IndexFlatIP(256)
    R = faiss.IndexIVFScalarQuantizer(quant, 256, nlist, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT, False)
    R.train(np.ascontiguousarray(X[:: max(1, N // (40 * nlist))]))
    print(f"train {time.perf_counter()-t:.1f}s", flush=True)
    for j in range(0, N, 100_000): R.add(np.ascontiguousarray(X[j:j+100_000]))
    print(f"built {time.perf_counter()-t:.1f}s", flush=True)
    faiss.write_index(R, str(f))
faiss.omp_set_num_threads(1)
sizes = faiss.vector_to_array(R.invlists.list_sizes if hasattr(R.invlists,'list_sizes') else faiss.IntVector()) if False else None
def bitmap(a):
    m = np.zeros(N, bool); m[a] = True; return np.packbits(m, bitorder="little")
def rescore(rows, q, k=K):
    rows = np.sort(rows); s = np.asarray(X[rows]) @ q
    return rows[np.argsort(-s)[:k]]
for nprobe in [int(x) for x in sys.argv[3].split(",")]:
    ts, rec, hit = [], [], []
    for i in list(range(2)) + list(range(NQ)):
        c = tt()
        bm = bitmap(A[i]); sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
        p = faiss.SearchParametersIVF(); p.sel = sel; p.nprobe = nprobe
        D, I = R.search(Q[i:i+1], 2 * K + 64, params=p)
        got = rescore(I[0][I[0] >= 0], Q[i])
        ts.append((tt() - c) * 1e3); rec.append(len(truth[i] & set(got.tolist())) / K); hit.append(tgt[i] in set(got.tolist()))
    ts, rec, hit = ts[2:], rec[2:], hit[2:]
    print(f"ivf{nlist} nprobe {nprobe:4d}: recall@200 {np.mean(rec):.4f} min {np.min(rec):.3f} target@200 {np.mean(hit):.3f} CPU p50 {np.percentile(ts,50):6.2f} p95 {np.percentile(ts,95):6.2f} ms load {os.getloadavg()[0]:.1f}", flush=True)
