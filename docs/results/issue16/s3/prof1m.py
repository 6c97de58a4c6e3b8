"""Session 3: per-stage CPU time of the full pipeline at 1M (one thread), one query at a time."""
import os, sys, time, numpy as np, faiss, torch
from collections import defaultdict
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions, search
from isr.plugin.store.maxsim import Int8Query
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.eval.bench import warm_page_cache
from isr.plugin.backend import relax_reason

nq = int(sys.argv[1]) if len(sys.argv) > 1 else 30
path = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
w = EncodedWorld(n_docs=1_000_000)
t0 = time.perf_counter(); idx = EmbeddedIndex.open(path, readonly=True); print(f"open {time.perf_counter()-t0:.1f}s", flush=True)
warm_page_cache(path); warm_page_cache(path / "fragments")
if "populate" in sys.argv:
    fm, cm = idx.fragments._maps(); fm._mmap.madvise(22); cm._mmap.madvise(22); idx.fast.vectors.view()._mmap.madvise(22); print("populated", flush=True)
if "mallopt" in sys.argv:
    import ctypes; libc = ctypes.CDLL("libc.so.6"); print("mallopt", libc.mallopt(-3, 1 << 30), libc.mallopt(-1, (1 << 31) - 1), flush=True)
qs, truth = encoded_queries(w, nq, seed=11)
set_threads(1)
base = SearchOptions()
fi = idx.fast
T = defaultdict(list)
tt = time.thread_time
def run(i, rec):
    q = qs[i:i+1]
    opt = base.with_(keywords=base.keywords.over(idx.config.keywords))
    c0 = tt()
    labels = opt.keywords.select(q.keywords[0], idx)
    c1 = tt()
    snap = idx._snap
    kw = opt.keywords
    adm = idx.keyword_rows(labels, kw.mode, kw.minimum_should_match, kw.r_i)
    c2 = tt()
    adm = adm & snap.alive
    c3 = tt()
    n = snap.n_rows
    adm = fi._below(adm, n)
    g = min(fi.hnsw.ntotal, n)
    bm = fi._bitmap(adm, g)
    c4 = tt()
    sel = faiss.IDSelectorBitmap(bm.shape[0], faiss.swig_ptr(bm))
    params = faiss.SearchParameters(); params.sel = sel
    storage = faiss.downcast_index(fi.hnsw.storage)
    k = opt.k; window = min(len(adm), 2 * k + 64)
    q32 = np.ascontiguousarray(q.fast[0], np.float32).reshape(1, -1)
    c5 = tt()
    D, I = storage.search(q32, window, params=params)
    c6 = tt()
    rows = np.sort(I[0][I[0] >= 0].astype(np.int64))
    sc = fi._dots(rows, q32[0])
    c7 = tt()
    from isr.plugin.embedded.fast_index import _topk
    top = _topk(sc, k); keys = rows[top]
    c8 = tt()
    sc_ = idx.scorer
    qf, qm = q.fragments[0], q.mask[0]
    qt, qmt = sc_._query(qf, qm, idx.fragments.d)
    c9 = tt()
    prep = Int8Query(qt[qmt], idx.fragments.codec.affine())
    c10 = tt()
    gat = 0.0; mx = 0.0; out = []
    for j in range(0, len(keys), 256):
        a = tt(); codes, cnt = idx.fragments.gather_codes(keys[j:j+256]); b = tt()
        out.append(prep.maxima(torch.from_numpy(codes), None).sum(0).numpy()); gat += b - a; mx += tt() - b
    c11 = tt()
    ms = np.concatenate(out)
    o = np.argsort(-ms, kind="stable")[:10]
    docs = idx.fetch(None, keys[o], True)
    c12 = tt()
    r = search(idx, q, base)
    c13 = tt()
    if rec:
        for name, v in [("labels", c1-c0), ("kw_union", c2-c1), ("and_alive", c3-c2), ("bitmap", c4-c3),
                        ("sel_setup", c5-c4), ("faiss_scan_topk", c6-c5), ("rescore_f32", c7-c6), ("topk", c8-c7),
                        ("rr_query", c9-c8), ("rr_int8prep", c10-c9), ("rr_gather", gat), ("rr_maxsim", mx),
                        ("fetch", c12-c11), ("sum", c12-c0), ("search()", c13-c12)]:
            T[name].append(v * 1e3)
        T["admitted"].append(len(adm))
        T["method"].append(0)
for i in range(min(5, nq)): run(i, False)
for i in range(nq): run(i, True)
print("load", os.getloadavg())
for k, v in T.items():
    if k == "method": continue
    print(f"{k:16s} p50 {np.percentile(v,50):9.3f}  mean {np.mean(v):9.3f}  p95 {np.percentile(v,95):9.3f}")
