"""Session 3: unfiltered FastScan (PQ4 / RaBitQ codes) top-W over all 1M, then the keyword bitmap
on those W, then f32 rescoring of the admitted ones -> top-200. recall@200 vs exact, CPU (1 thread)."""
import os, sys, time, numpy as np, faiss
from pathlib import Path
faiss.omp_set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent)); from screens import load
NQ = int(sys.argv[1]); RESC = int(sys.argv[4]) if len(sys.argv) > 4 else 0
P, N, X, Q, A, tgt, truth, K = load(NQ, populate=True)
tt = time.thread_time
masks = []
for i in range(NQ):
    m = np.zeros(N, bool); m[A[i]] = True; masks.append(m)
for spec in sys.argv[2].split(","):
    f = P.parent / f"{spec}.faiss"
    if f.exists(): R = faiss.read_index(str(f))
    else:
        R = {"pq64": lambda: faiss.IndexPQFastScan(256, 64, 4, faiss.METRIC_INNER_PRODUCT),
             "pq128": lambda: faiss.IndexPQFastScan(256, 128, 4, faiss.METRIC_INNER_PRODUCT),
             "rbqfs": lambda: faiss.IndexRaBitQFastScan(256, faiss.METRIC_INNER_PRODUCT)}[spec]()
        t = time.perf_counter(); R.train(np.ascontiguousarray(X[::10]))
        for j in range(0, N, 100_000): R.add(np.ascontiguousarray(X[j:j+100_000]))
        print(f"{spec} built {time.perf_counter()-t:.1f}s", flush=True); faiss.write_index(R, str(f))
    for W in [float(w) for w in sys.argv[3].split(",")]:
        ts, tsc, rec, hit, kept = [], [], [], [], []
        for i in list(range(2)) + list(range(NQ)):
            c = tt()
            w_ = int(W) if W >= 100 else int(min(max(W * K * N / len(A[i]), 4000), 32768))
            D, I = R.search(Q[i:i+1], w_)
            c1 = tt()
            ids = I[0][I[0] >= 0]; ok = masks[i][ids]; ids = ids[ok]
            if RESC: ids = ids[:RESC]  # best by the PQ estimate first  # the admitted ones (the real path would test the roaring bitmap)
            rows = np.sort(ids); s = np.asarray(X[rows]) @ Q[i]; got = rows[np.argsort(-s)[:K]]
            ts.append((tt() - c) * 1e3); tsc.append((c1 - c) * 1e3); kept.append(len(ids))
            rec.append(len(truth[i] & set(got.tolist())) / K); hit.append(tgt[i] in set(got.tolist()))
        ts, tsc, rec, hit, kept = ts[2:], tsc[2:], rec[2:], hit[2:], kept[2:]
        sh = np.array([len(A[i]) / N for i in range(NQ)]); rr = np.array(rec)
        for lo, hi in ((0, .08), (.08, .15), (.15, .3), (.3, 1)):
            b = (sh >= lo) & (sh < hi)
            if b.any(): print(f"   share [{lo},{hi}): n {b.sum()} recall {rr[b].mean():.4f} min {rr[b].min():.3f}")
        print(f"{spec} W{W}: recall@200 {np.mean(rec):.4f} min {np.min(rec):.3f} target@200 {np.mean(hit):.3f} (exact {np.mean([tgt[i] in truth[i] for i in range(NQ)]):.3f}) admitted kept p50 {np.median(kept):.0f} CPU p50 {np.percentile(ts,50):.2f} p95 {np.percentile(ts,95):.2f} (scan {np.median(tsc):.2f}) ms load {os.getloadavg()[0]:.1f}", flush=True)
