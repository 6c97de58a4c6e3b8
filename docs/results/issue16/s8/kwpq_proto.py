"""Prototype (session 8): a PQ copy whose inverted lists are the keyword labels (each row in the
lists of its R_I stored labels; FAISS IndexIVFPQFastScan with the lists preassigned), so a
keyword-screened query scans only its labels' rows, against the exact filtered top-200; 1M, one
thread, the bench's queries (seed 11).
usage: kwpq_proto.py <gallery> [nq] [M sub-quantisers, e.g. 64,128]"""

import os, sys, time
from pathlib import Path
import numpy as np, faiss
from pyroaring import BitMap
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions
from isr.plugin.embedded.fast_index import _topk
from isr.ingest.encoded_world import EncodedWorld, encoded_queries

path = Path(sys.argv[1])
nq = int(sys.argv[2]) if len(sys.argv) > 2 else 60
Ms = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "64").split(",")]
idx = EmbeddedIndex.open(path, readonly=True)
idx.preload()
fi = idx.fast
n = idx.n_rows
d = idx.config.d_fast
w = EncodedWorld(n_docs=n)
qs, _ = encoded_queries(w, nq, seed=11)
base = SearchOptions(knn_method="compressed")
opt = base.with_(keywords=base.keywords.over(idx.config.keywords))
adms, tids = [], []
for i in range(nq):
    kw = opt.keywords
    labels = kw.select(qs.keywords[i], idx)
    tids.append(np.array(idx.term_ids(labels), np.int64))
    assert kw.mode == "any" and kw.r_i in (None, idx.config.r_i), (kw.mode, kw.r_i)
    adms.append(
        idx.keyword_rows(labels, kw.mode, kw.minimum_should_match, kw.r_i) & idx._snap.alive
    )
k = 200
truth = [set(fi.exact(qs.fast[i], k, adms[i], n).rows.tolist()) for i in range(nq)]
lab = idx.keywords.labels.view()[:n]  # (n, R_I) term ids
V = int(lab.max()) + 1
print(
    f"n {n} V {V} R_I {lab.shape[1]} admitted p50 {np.median([len(a) for a in adms]):.0f}",
    flush=True,
)
x = fi.vectors.view()
for M in Ms:
    t0 = time.time()
    base_fs = faiss.IndexPQFastScan(d, M, 4, faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(2)
    take = np.sort(np.random.default_rng(0).choice(n, 65_536, replace=False))
    base_fs.train(np.ascontiguousarray(x[take]))
    flat = lab.reshape(-1)
    rows_of = np.repeat(np.arange(n), lab.shape[1])
    keep = flat >= 0
    flat, rows_of = flat[keep], rows_of[keep]
    order = np.argsort(flat, kind="stable")
    flat, rows_of = flat[order], rows_of[order]
    cuts = np.searchsorted(flat, np.arange(V + 1))
    lists, ids_of = {}, {}
    for t in range(V):
        r = rows_of[cuts[t] : cuts[t + 1]]
        if r.size == 0:
            continue
        fs = faiss.clone_index(base_fs)
        for s0 in range(0, r.size, 65_536):
            fs.add(np.ascontiguousarray(x[r[s0 : s0 + 65_536]]))
        lists[t] = fs
        ids_of[t] = r.astype(np.int64)
    faiss.omp_set_num_threads(1)
    tot = sum(v.size for v in ids_of.values())
    print(
        f"M {M}: built in {time.time() - t0:.0f} s, {tot} entries, {tot * M / 2 / n:.0f} B/row of codes",
        flush=True,
    )
    set_threads(1)
    tt = time.thread_time
    for want in [int(a) for a in os.environ.get("KEEPS", "464,1000,2000,3000").split(",")]:
        for shortlist in (True, False):
            R, T, S, U = [], [], [], []
            for i in range(nq):
                q32 = np.ascontiguousarray(qs.fast[i : i + 1], np.float32)
                c0 = tt()
                Ds, Is = [], []
                for t in tids[i].tolist():
                    fs = lists.get(t)
                    if fs is None:
                        continue
                    D, I = fs.search(q32, min(want, fs.ntotal))
                    ok = I[0] >= 0
                    Ds.append(D[0][ok])
                    Is.append(ids_of[t][I[0][ok]])
                D = np.concatenate(Ds)
                I = np.concatenate(Is)
                c1 = tt()
                uniq, first = np.unique(I, return_index=True)  # rows in 2+ of the lists: once
                Du = D[first]
                if uniq.size > want:
                    sel = np.argpartition(-Du, want - 1)[:want]
                    uniq = uniq[sel]
                rows = np.sort(uniq)
                if shortlist:
                    rows = fi._shortlist(rows, q32[0], k)
                sc = fi._dots(rows, q32[0])
                top = rows[_topk(sc, k)]
                c3 = tt()
                T.append((c3 - c0) * 1e3)
                S.append((c1 - c0) * 1e3)
                U.append(len(rows))
                R.append(len(truth[i] & set(top.tolist())) / max(1, len(truth[i])))
            print(
                f"  keep {want:5d} sq8 shortlist {shortlist!s:5}: recall@200 {np.mean(R):.3f} (min {np.min(R):.3f}); CPU ms p50 {np.median(T):.2f} p95 {np.percentile(T, 95):.2f} (scans {np.median(S):.2f}); rescored p50 {np.median(U):.0f}",
                flush=True,
            )
