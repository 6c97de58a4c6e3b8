import time, os, numpy as np, torch
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin.embedded.index import EmbeddedIndex
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.plugin.store.maxsim import Int8Query
set_threads(1)
idx = EmbeddedIndex.open(Path("runs/bench/g100K-sq8-sq8-m16-efc100"), readonly=True)
st = idx.fragments
print("store", st.max_frags, st.d, st.codec, "load", os.getloadavg()[0])
w = EncodedWorld(n_docs=100_000)
qs, _ = encoded_queries(w, 20, seed=11)
rng = np.random.default_rng(5)
def tm(fn, r=30):
    best = []
    for _ in range(r):
        c0 = time.thread_time(); fn(); best.append(time.thread_time() - c0)
    return np.min(best) * 1e3, np.median(best) * 1e3
q, qm = qs.fragments[0], qs.mask[0]
nv = int(qm.sum()); print("nv", nv)
rows = np.sort(rng.choice(idx.n_rows, 200, replace=False))
print("score_rows min/med ms", tm(lambda: idx.scorer.score_rows(q, qm, st, rows)))
print("gather_codes", tm(lambda: st.gather_codes(rows)))
codes, cnt = st.gather_codes(rows)
qt = torch.from_numpy(q[qm].astype(np.float32))
print("Int8Query()", tm(lambda: Int8Query(qt, st.codec.affine())))
prep = Int8Query(qt, st.codec.affine())
ct = torch.from_numpy(codes)
print("maxima (200 rows, 1 block)", tm(lambda: prep.maxima(ct.clone(), None)))
s8 = ct.clone().bitwise_xor_(0x80).view(torch.int8).view(-1, st.d)
print("int_mm only", tm(lambda: torch._int_mm(prep.rows, s8.T)))
s8c = s8.T.contiguous()
print("int_mm only (B contiguous K-major)", tm(lambda: torch._int_mm(prep.rows, s8c)))
p = torch._int_mm(prep.rows, s8.T)
print("recombine", tm(lambda: p[:nv].float().mul_(254.**2).add_(p[nv:2*nv].float().mul_(254.)).add_(p[2*nv:].float())))
t = torch.randn(nv, 200, st.max_frags)
print("amax", tm(lambda: t.amax(dim=2)))
fl = torch.randn(st.max_frags*200, st.d); qf = torch.randn(nv, st.d)
print("float mm same shape", tm(lambda: torch.mm(qf, fl.T)))
print("float mm same shape x3 rows", tm(lambda: torch.mm(torch.randn(3*nv, st.d), fl.T)))
flops = 2.0 * nv * st.max_frags * st.d * 200
side = round((flops / 2) ** (1 / 3)); a = torch.randn(side, side)
m_ = tm(lambda: torch.mm(a, a))
print("square mm same flops", m_[0] * flops / (2*side**3), "ms; side", side)
i8a = torch.randint(-127, 127, (side, side), dtype=torch.int8)
print("square int8 mm same flops", tm(lambda: torch._int_mm(i8a, i8a))[0] * flops / (2*side**3))
print("load", os.getloadavg()[0])
