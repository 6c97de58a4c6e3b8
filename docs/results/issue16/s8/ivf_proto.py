"""Prototype (session 8): an IVF product-quantised copy scanned under the keyword bitmap
(FAISS IndexIVFPQFastScan takes an IDSelector, IndexPQFastScan does not) against the exact
filtered top-k, at 1M, one thread, the bench's queries (seed 11).
usage: ivf_proto.py <gallery> [nq] [nlist,...] ; prints recall@200 of the rescored top-200
against the exact filtered top-200 and CPU ms p50 per (nlist, probe rule)."""

import os, sys, time
from pathlib import Path
import numpy as np, faiss
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions
from isr.ingest.encoded_world import EncodedWorld, encoded_queries

path = Path(sys.argv[1])
nq = int(sys.argv[2]) if len(sys.argv) > 2 else 60
nlists = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1024,4096").split(",")]
idx = EmbeddedIndex.open(path, readonly=True)
idx.preload()
fi = idx.fast
n = idx.n_rows
d = idx.config.d_fast
w = EncodedWorld(n_docs=n)
qs, _ = encoded_queries(w, nq, seed=11)
base = SearchOptions(knn_method="compressed")
opt = base.with_(keywords=base.keywords.over(idx.config.keywords))
adms = []
for i in range(nq):
    kw = opt.keywords
    labels = kw.select(qs.keywords[i], idx)
    adms.append(
        idx.keyword_rows(labels, kw.mode, kw.minimum_should_match, kw.r_i) & idx._snap.alive
    )
k = 200
truth = [set(fi.exact(qs.fast[i], k, adms[i], n).rows.tolist()) for i in range(nq)]
share = np.array([len(a) / n for a in adms])
print(
    f"n {n} d {d} admitted share p50 {np.median(share):.3f} min {share.min():.3f} max {share.max():.3f}",
    flush=True,
)
x = fi.vectors.view()
set_threads(1)
tt = time.thread_time
for nlist in nlists:
    t0 = time.time()
    quant = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFPQFastScan(quant, d, nlist, d // 4, 4, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    take = np.sort(rng.choice(n, min(n, max(65_536, 40 * nlist)), replace=False))
    faiss.omp_set_num_threads(2)
    ivf.train(np.ascontiguousarray(x[take]))
    for i in range(0, n, 65_536):
        ivf.add(np.ascontiguousarray(x[i : i + 65_536]))
    faiss.omp_set_num_threads(1)
    print(
        f"nlist {nlist}: built in {time.time() - t0:.0f} s; list sizes p50 {np.median([ivf.invlists.list_size(j) for j in range(nlist)]):.0f}",
        flush=True,
    )
    for alpha in [float(a) for a in os.environ.get("ALPHAS", "2,4,8,16").split(",")]:
        for keep in [int(a) for a in os.environ.get("KEEPS", "264,464,1000").split(",")]:
            rec, tm, kept = [], [], []
            for i in range(nq):
                q32 = np.ascontiguousarray(qs.fast[i : i + 1], np.float32)
                c0 = tt()
                bm = fi._bitmap(adms[i], n)
                sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
                # probe enough lists to meet alpha * k admitted rows if the filter were independent
                nprobe = (
                    int(min(nlist, max(8, np.ceil(alpha * k / (share[i] * n / nlist)))))
                    if alpha > 0
                    else int(-alpha)
                )
                p = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel)
                _, I = ivf.search(q32, keep, params=p)
                rows = np.sort(I[0][I[0] >= 0].astype(np.int64))
                sc = fi._dots(rows, q32[0])
                top = rows[np.argsort(-sc)[:k]]
                tm.append((tt() - c0) * 1e3)
                rec.append(len(truth[i] & set(top.tolist())) / max(1, len(truth[i])))
                kept.append(nprobe)
            print(
                f"  alpha {alpha:5.0f} keep {keep:5d}: recall@200 {np.mean(rec):.3f} (min {np.min(rec):.3f})  CPU ms p50 {np.median(tm):.2f} p95 {np.percentile(tm, 95):.2f}  nprobe p50 {np.median(kept):.0f}",
                flush=True,
            )
