"""Session 4: settings of the compressed kNN method at 1M, chosen on query sets disjoint from the
report set (seed 11, the bench's). Variants: main's method (float32 rescoring of every admitted
row of the window) and this branch's (sq8 shortlist, then float32), over the 128 x 4-bit PQ copy
(pq.faiss) or a 64 x 4-bit one (runs/bench/pq64.faiss), at several window factors alpha.

Recall pass: every variant on the same queries (seed 21): R@10 of the full pipeline, and the
kNN stage's recall@200 against the exact filtered top-200. Timing pass: each variant on its own
queries (seed 31, query j -> variant j mod V), so every search meets its rows cold, as a serving
process's new queries do; CPU time (thread_time) of search(), one thread.
usage: tune1m.py n_recall n_time_per_variant [exh.json] [variants: a,b,...]"""
import array, json, os, sys, time, types
from collections import defaultdict
from pathlib import Path
import numpy as np, faiss
from pyroaring import BitMap
from isr.app.runtime import set_threads
from isr.plugin import EmbeddedIndex, SearchOptions, search
from isr.plugin.embedded import fast_index
from isr.plugin.embedded.fast_index import FastIndex, KnnResult, _topk
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.eval.ablations import recall_at
sys.path.insert(0, str(Path(__file__).parent))
from main_knn import main_compressed  # noqa: E402

n_rec, n_time = int(sys.argv[1]), int(sys.argv[2])
exh = json.loads(Path(sys.argv[3]).read_text()) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
path = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
idx = EmbeddedIndex.open(path, readonly=True); idx.preload()
fi = idx.fast
set_threads(1)
pqs = {"pq128": fi.pq, "pq64": faiss.read_index("/work/wt/speed2/runs/bench/pq64.faiss")}
assert all(p.ntotal == idx.n_rows for p in pqs.values())
V = [("main pq128 a8", True, "pq128", 8.0, 0)]
V += [(f"new {p} a{a:g}", False, p, a, 0) for p, al in (("pq128", (8, 6, 4)), ("pq64", (8, 12, 16, 24))) for a in al]
if len(sys.argv) > 4:  # variants by name, e.g. "new pq64 a8 w4096" (w: the window's floor)
    want = sys.argv[4].split(",")
    V = [v for v in V if v[0] in want]
    for nm in want:
        if nm not in [v[0] for v in V]:
            _, p, a, *w = nm.split()
            V.append((nm, False, p, float(a[1:]), int(w[0][1:]) if w else 0))
names = [v[0] for v in V]
def use(v):
    _, old, p, a, wmin = v
    fast_index.COMPRESSED_ALPHA = a
    fast_index.COMPRESSED_MIN_WINDOW = wmin
    fi.pq = pqs[p]
    if old:
        fi.compressed = types.MethodType(main_compressed, fi)
    elif "compressed" in fi.__dict__:
        del fi.compressed
ablation = os.environ.get("ABLATION", "full")  # keywords+fast: k = size = 10, no rerank
opt = SearchOptions.for_ablation(ablation, knn_method="compressed")
ex_opt = SearchOptions.for_ablation(ablation, knn_method="exact")
world = EncodedWorld(n_docs=idx.n_rows)

def cands(q, o):
    oo = o.with_(keywords=o.keywords.over(idx.config.keywords))
    labels = oo.keywords.select(q.keywords[0], idx)
    return idx.candidates(q, labels, oo)

# warm: allocator pools, both PQ copies
wq, _ = encoded_queries(world, 10, seed=99)
for v in V:
    use(v)
    for i in range(len(wq)): search(idx, wq[i:i+1], opt)

qs, truth = encoded_queries(world, n_rec, seed=21)
tops = defaultdict(list); rec200 = defaultdict(list); nres = defaultdict(list)
ref_tops = []
for i in range(n_rec):
    q = qs[i:i+1]
    ref = set(cands(q, ex_opt).keys.tolist())
    ref_tops.append(tuple(h.id for h in search(idx, q, ex_opt).hits))
    for v in V:
        use(v)
        c = cands(q, opt)
        rec200[v[0]].append(len(ref & set(c.keys.tolist())) / max(len(ref), 1))
        tops[v[0]].append(tuple(h.id for h in search(idx, q, opt).hits))
    if (i + 1) % 25 == 0: print("recall pass", i + 1, os.getloadavg(), flush=True)
r_ex = recall_at(ref_tops, truth)
e10 = None
if exh is not None:
    m = min(len(exh["tops"]), n_rec)
    assert exh["truth"][:m] == truth[:m]
    e10 = recall_at(exh["tops"][:m], truth[:m])
print(f"{ablation}, k {opt.k}: recall set seed 21, {n_rec} queries: exact-kNN R@10 {r_ex:.3f}" + (f", exhaustive R@10 {e10:.3f} (first {m})" if e10 else ""))
for nm in names:
    r10 = recall_at(tops[nm], truth)
    print(f"  {nm:16s} R@10 {r10:.3f}" + (f" ({100*r10/e10:.1f}% of exhaustive)" if e10 else "") +
          f"  kNN recall@{opt.k} vs exact {np.mean(rec200[nm]):.4f} (p10 {np.percentile(rec200[nm],10):.3f})", flush=True)

tq, _ = encoded_queries(world, n_time * len(V), seed=31)
cpu = defaultdict(list); knn_ms = defaultdict(list)
l0 = os.getloadavg()
for j in range(n_time * len(V)):
    v = V[j % len(V)]
    use(v)
    c = time.thread_time(); r = search(idx, tq[j:j+1], opt); cpu[v[0]].append((time.thread_time() - c) * 1e3)
    knn_ms[v[0]].append(r.profile.stage("knn").ms)
print(f"timing set seed 31, {n_time} queries per variant (own queries), load {l0} -> {os.getloadavg()}")
for nm in names:
    x = cpu[nm]
    print(f"  {nm:16s} CPU p50 {np.percentile(x,50):6.2f} p95 {np.percentile(x,95):6.2f} mean {np.mean(x):6.2f} | knn wall p50 {np.median(knn_ms[nm]):5.2f}", flush=True)
