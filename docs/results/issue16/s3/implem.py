"""Session 3: FastScan search variants (implem) for the PQ copy at 1M, W 8000 (CPU, 1 thread)."""
import os, time, numpy as np, faiss
faiss.omp_set_num_threads(1)
R = faiss.read_index("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100/pq.faiss")
Z = np.load("/work/wt/speed2/runs/s3/adm1m.npz"); Q = Z["fast"][:12].astype(np.float32)
tt = time.thread_time
base = None
for W in (2000, 8000, 32768):
    for implem in (0, 12, 13, 14, 15):
        R.implem = implem
        try:
            ts = []
            for i in range(12):
                c = tt(); D, I = R.search(Q[i:i+1], W); ts.append((tt() - c) * 1e3)
                if i == 0 and implem == 0: base = set(I[0].tolist())
                elif i == 0: same = len(base & set(I[0].tolist())) / W
            print(f"W {W} implem {implem}: p50 {np.median(ts[2:]):.2f} ms" + ("" if implem == 0 else f" (same ids as implem 0: {same:.3f})"), flush=True)
        except Exception as e:
            print(f"W {W} implem {implem}: {str(e)[:100]}")
print(os.getloadavg())
