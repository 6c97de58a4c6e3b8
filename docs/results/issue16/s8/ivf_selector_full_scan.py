"""Session 8: the unfiltered PQ FastScan copy at several k, and IVF-PQ FastScan with 1 / 16 lists under the keyword bitmap selector (1M gallery, 30 bench queries): output in ivf_results.md."""

import time, numpy as np, faiss, os
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions
from isr.ingest.encoded_world import EncodedWorld, encoded_queries

idx = EmbeddedIndex.open(Path("/work/bench8/runs/g1M-sq8-sq8-m16-efc100"), readonly=True)
idx.preload()
fi = idx.fast
n = idx.n_rows
d = 256
nq = 30
qs, _ = encoded_queries(EncodedWorld(n_docs=n), nq, seed=11)
base = SearchOptions(knn_method="compressed")
opt = base.with_(keywords=base.keywords.over(idx.config.keywords))
adms = []
for i in range(nq):
    kw = opt.keywords
    labels = kw.select(qs.keywords[i], idx)
    adms.append(
        idx.keyword_rows(labels, kw.mode, kw.minimum_should_match, kw.r_i) & idx._snap.alive
    )
truth = [set(fi.exact(qs.fast[i], 200, adms[i], n).rows.tolist()) for i in range(nq)]
set_threads(1)
tt = time.thread_time
pq = faiss.read_index("/work/bench8/runs/g1M-sq8-sq8-m16-efc100/pq.faiss")
print(type(pq), pq.ntotal)
for k in (200, 2000, 11000):
    T = []
    for i in range(nq):
        q = np.ascontiguousarray(qs.fast[i : i + 1])
        c0 = tt()
        pq.search(q, k)
        T.append((tt() - c0) * 1e3)
    print("flat PQFS k", k, "p50 %.2f" % np.median(T), flush=True)
x = fi.vectors.view()
for nlist in (1, 16):
    ivf = faiss.IndexIVFPQFastScan(
        faiss.IndexFlatIP(d), d, nlist, 64, 4, faiss.METRIC_INNER_PRODUCT
    )
    faiss.omp_set_num_threads(2)
    ivf.train(
        np.ascontiguousarray(x[np.sort(np.random.default_rng(0).choice(n, 65536, replace=False))])
    )
    for j in range(0, n, 65536):
        ivf.add(np.ascontiguousarray(x[j : j + 65536]))
    faiss.omp_set_num_threads(1)
    for npr in sorted({1, max(1, nlist // 4), nlist}):
        for keep in (464, 1500, 3000):
            T = []
            R = []
            S = []
            for i in range(nq):
                q = np.ascontiguousarray(qs.fast[i : i + 1])
                c0 = tt()
                bm = fi._bitmap(adms[i], n)
                sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
                c1 = tt()
                _, I = ivf.search(q, keep, params=faiss.SearchParametersIVF(nprobe=npr, sel=sel))
                rows = np.sort(I[0][I[0] >= 0].astype(np.int64))
                rows = fi._shortlist(rows, q[0], 200)
                sc = fi._dots(rows, q[0])
                top = rows[np.argsort(-sc)[:200]]
                T.append((tt() - c0) * 1e3)
                S.append((c1 - c0) * 1e3)
                R.append(len(truth[i] & set(top.tolist())) / 200)
            print(
                f"ivf nlist {nlist} nprobe {npr} keep {keep}: recall@200 {np.mean(R):.3f} total p50 {np.median(T):.2f} (bitmap {np.median(S):.2f}) p95 {np.percentile(T, 95):.2f}",
                flush=True,
            )
