"""Per-stage CPU time of the full pipeline at 1M, one query at a time, one thread, the gallery
preloaded as `isr serve` does (session 3's exact-scan profile and session 4's compressed one in
one script). Each stage is the pipeline's own call, timed with thread_time, the query's rows met
cold; "search()" is then the real call on the same query (its rows warm).
usage: prof1m.py [nq] [compressed|exact] [gallery]; env PQ=<a PQ copy's file> ALPHA=<window factor>
try other settings of the compressed method; RERANK=scorer times the rerank as the scorer runs it
(score_rows: float32 on CPUs without fast int8 kernels, session 7) instead of Int8Query directly"""
import array, os, sys, time
from collections import defaultdict
from pathlib import Path
import numpy as np, faiss, torch
from pyroaring import BitMap
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions, search
from isr.plugin.store.maxsim import Int8Query
from isr.plugin.embedded import fast_index
from isr.plugin.embedded.fast_index import _topk
from isr.ingest.encoded_world import EncodedWorld, encoded_queries

nq = int(sys.argv[1]) if len(sys.argv) > 1 else 60
method = sys.argv[2] if len(sys.argv) > 2 else "compressed"
path = Path(sys.argv[3] if len(sys.argv) > 3 else "/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
idx = EmbeddedIndex.open(path, readonly=True); idx.preload()
n_docs = idx.n_rows
w = EncodedWorld(n_docs=n_docs)
set_threads(1)
fi = idx.fast
if os.environ.get("PQ"):
    fi.pq = faiss.read_index(os.environ["PQ"])
if os.environ.get("ALPHA"):
    fast_index.COMPRESSED_ALPHA = float(os.environ["ALPHA"])
print("pq", fi.pq is not None and (fi.pq.M, fi.pq.ntotal), "alpha", fast_index.COMPRESSED_ALPHA, flush=True)
SCORER = os.environ.get("RERANK", "int8") == "scorer"
base = SearchOptions(knn_method=method)
tt = time.thread_time
T = defaultdict(list)
qs, _ = encoded_queries(w, nq + 10, seed=11)
def run(i, rec):
    q = qs[i:i+1]
    c0 = tt()
    opt = base.with_(keywords=base.keywords.over(idx.config.keywords))
    labels = opt.keywords.select(q.keywords[0], idx)
    c1 = tt()
    snap = idx._snap
    kw = opt.keywords
    adm = idx.keyword_rows(labels, kw.mode, kw.minimum_should_match, kw.r_i)
    c2 = tt()
    adm = adm & snap.alive
    c3 = tt()
    n = snap.n_rows
    adm = fi._below(adm, n); m = len(adm)
    k = opt.k
    q32 = np.ascontiguousarray(q.fast[0], np.float32).reshape(1, -1)
    if method == "compressed":  # FastIndex.compressed, stage by stage
        g = min(fi.pq.ntotal, n)
        wnd = int(min(max(fast_index.COMPRESSED_ALPHA * k * n / m, 2 * k + 64), fast_index.COMPRESSED_MAX_WINDOW, g))
        c4 = tt()
        _, ids = fi.pq.search(q32, wnd)
        c5 = tt()
        ids = np.sort(ids[0][(ids[0] >= 0) & (ids[0] < g)].astype(np.uint32))
        window = BitMap(array.array("I", ids.tobytes())); window &= adm
        rows = np.frombuffer(window.to_array(), np.uint32).astype(np.int64)
        c6 = tt()
        nw = len(rows)
        rows = fi._shortlist(rows, q32[0], k)
        c6b = tt()
    else:  # FastIndex.exact over sq8 storage
        wnd = min(m, 2 * k + 64)
        c4 = tt()
        bm = fi._bitmap(adm, min(fi.hnsw.ntotal, n))
        sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
        params = faiss.SearchParameters(); params.sel = sel
        storage = faiss.downcast_index(fi.hnsw.storage)
        c5 = tt()
        D, I = storage.search(q32, wnd, params=params)
        rows = np.sort(I[0][I[0] >= 0].astype(np.int64)); nw = len(rows)
        c6 = c6b = tt()
    sc = fi._dots(rows, q32[0])
    c7 = tt()
    top = _topk(sc, k); keys = rows[top]
    c8 = tt()
    sc_ = idx.scorer
    qt, qmt = sc_._query(q.fragments[0], q.mask[0], idx.fragments.d)
    if SCORER:  # the gather alone first (for scale), then the scorer's own rerank
        c9 = tt()
        a = tt(); idx.fragments.gather_codes(keys); gat = tt() - a
        b = tt(); ms = sc_.score_rows(q.fragments[0], q.mask[0], idx.fragments, keys); mx = tt() - b
        c10 = tt()  # rr_maxsim = score_rows (its own gather included); rr_glue ~0
    else:
        prep = Int8Query(qt[qmt], idx.fragments.codec.affine())
        c9 = tt()
        gat = mx = 0.0; out = []
        for j in range(0, len(keys), 256):
            a = tt(); codes, cnt = idx.fragments.gather_codes(keys[j:j+256]); b = tt()
            out.append(prep.maxima(torch.from_numpy(codes), None).sum(0).numpy()); gat += b - a; mx += tt() - b
        c10 = tt()
        ms = np.concatenate(out)
    o = np.argsort(-ms, kind="stable")[:10]
    docs = idx.fetch(None, keys[o], True)
    c11 = tt()
    r = search(idx, q, base)
    c12 = tt()
    if rec:
        for name, v in [("labels", c1-c0), ("kw_union", c2-c1), ("and_alive", c3-c2), ("setup", c4-c3),
                        ("pq_scan|bitmap", c5-c4), ("window_and|scan", c6-c5), ("sq8_shortlist", c6b-c6), ("rescore_f32", c7-c6b), ("topk", c8-c7),
                        ("rr_prep", c9-c8), ("rr_gather", gat), ("rr_maxsim", mx), ("rr_glue", c10-c9-gat-mx),
                        ("fetch", c11-c10), ("sum", c11-c0), ("search()", c12-c11)]:
            T[name].append(v * 1e3)
        T["admitted"].append(m); T["window"].append(wnd); T["admitted_in_window"].append(nw); T["rescored_f32"].append(len(rows))
        T["method=" + r.profile.stage("knn").detail].append(1)
for i in range(nq, nq + 10): run(i, False)
l0 = os.getloadavg()
for i in range(nq): run(i, True)
print("load", l0, "->", os.getloadavg())
for k, v in T.items():
    if k.startswith("method"): print(k, len(v)); continue
    print(f"{k:14s} p50 {np.percentile(v,50):9.3f}  mean {np.mean(v):9.3f}  p95 {np.percentile(v,95):9.3f}")
