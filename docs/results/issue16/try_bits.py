"""1-bit (sign) scan under the keyword bitmap + float32 rescoring, vs the exact sq8 scan (1M)."""
import os, sys, time, numpy as np, faiss
from pathlib import Path
from pyroaring import BitMap
from isr.app.runtime import set_threads
from isr.plugin.embedded.index import EmbeddedIndex
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
set_threads(1)
n = int(sys.argv[1]); name = "g100K" if n == 100_000 else "g1M"
idx = EmbeddedIndex.open(Path(f"runs/bench/{name}-sq8-sq8-m16-efc100"), readonly=True)
fi = idx.fast
t0 = time.perf_counter()
view = fi.vectors.view()
codes = np.empty((n, fi.config.d_fast // 8), np.uint8)
for i in range(0, n, 65536):
    codes[i:i+65536] = np.packbits(view[i:i+65536] > 0, axis=1)
bi = faiss.IndexBinaryFlat(fi.config.d_fast); bi.add(codes)
print(f"built bits in {time.perf_counter()-t0:.1f}s; load {os.getloadavg()[0]:.1f}", flush=True)
qs, _ = encoded_queries(EncodedWorld(n_docs=n), 30, seed=11)
k = 200
res = {}
for i in range(len(qs)):
    allowed = idx.keyword_rows(qs.keywords[i].top(3), "any") & idx.alive
    q = qs.fast[i]
    c0 = time.thread_time(); ex = fi.exact(q, k, allowed); t_ex = time.thread_time() - c0
    truth = set(ex.rows.tolist())
    for R in (1000, 2000, 4000):
        c0 = time.thread_time()
        p = faiss.SearchParameters(); bm = fi._bitmap(allowed, n)
        sel = faiss.IDSelectorBitmap(len(bm), faiss.swig_ptr(bm)); p.sel = sel
        qb = np.packbits(q > 0)[None]
        D, I = bi.search(qb, R, params=p)
        rows = np.sort(I[0][I[0] >= 0].astype(np.int64))
        s = fi._dots(rows, np.ascontiguousarray(q, np.float32))
        top = rows[np.argsort(-s)[:k]]
        t = time.thread_time() - c0
        res.setdefault(R, []).append((t, len(truth & set(top.tolist())) / k))
    res.setdefault("exact", []).append((t_ex, 1.0))
for key, v in res.items():
    v = np.array(v); print(key, f"cpu p50 {np.median(v[:,0])*1e3:.2f} ms, recall@200 {v[:,1].mean():.3f}")
print("load", os.getloadavg()[0])
