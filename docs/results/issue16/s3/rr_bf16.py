"""Session 3: the rerank of 200 rows (score_rows over sq8 codes) - main's int8 path vs a bf16 path
(codes -> bf16, exact for 0..255; the query split into bf16 hi + lo rows; one bf16 GEMM, AMX via
oneDNN), side by side, CPU time, 1 thread; top-10 agreement with the float64 reference."""
import os, time, numpy as np, torch
from pathlib import Path
from isr.plugin import EmbeddedIndex
from isr.plugin.store.maxsim import Int8Query, MaxSimScorer
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
torch.set_num_threads(1)
path = Path("/work/wt/speed2/runs/bench/g100K-sq8-sq8-m16-efc100")
idx = EmbeddedIndex.open(path, readonly=True); idx.preload()
st = idx.fragments; a, b = st.codec.affine()
qs, _ = encoded_queries(EncodedWorld(n_docs=100_000), 60, seed=11)
sc = MaxSimScorer("cpu"); rng = np.random.default_rng(0)
tt = time.thread_time
def bf16_rows(q, qm, rows):
    qv = torch.from_numpy(np.ascontiguousarray(q[qm], np.float32))  # (nv, d)
    qa = qv * a
    hi = qa.bfloat16(); lo = (qa - hi.float()).bfloat16()
    w = torch.cat([hi, lo])  # (2 nv, d)
    nv = qv.shape[0]; const = float(b * qv.sum())
    out = np.empty(len(rows), np.float32)
    for i in range(0, len(rows), 256):
        codes, cnt = st.gather_codes(rows[i:i+256])
        c, n, d = codes.shape
        x = torch.from_numpy(codes).view(c * n, d).to(torch.bfloat16)
        p = torch.mm(w, x.T)  # (2nv, c n) bf16 out
        t = (p[:nv].float() + p[nv:].float()).view(nv, c, n)
        out[i:i+c] = t.amax(2).sum(0).numpy()
    return out + np.float32(const)
def ref(q, qm, rows):
    codes, cnt = st.gather_codes(rows)
    x = st.codec.decode(codes).astype(np.float64)  # (C, n, d)
    s = np.einsum("id,cjd->icj", q[qm].astype(np.float64), x).max(2).sum(0)
    return s
T = {"int8 (main)": [], "bf16": []}; agree = {"int8 (main)": [], "bf16": []}; err = {"int8 (main)": [], "bf16": []}
for i in range(len(qs)):
    rows = np.sort(rng.choice(100_000, 200, replace=False))
    q, qm = qs.fragments[i], qs.mask[i]
    r = ref(q, qm, rows); top = set(np.argsort(-r)[:10].tolist())
    for name in (["int8 (main)", "bf16"] if i % 2 else ["bf16", "int8 (main)"]):
        c = tt()
        s = sc.score_rows(q, qm, st, rows) if name.startswith("int8") else bf16_rows(q, qm, rows)
        T[name].append((tt() - c) * 1e3)
        agree[name].append(len(top & set(np.argsort(-s)[:10].tolist())) / 10); err[name].append(np.abs(s - r).max())
for k in T:
    print(f"{k:12s} score_rows 200 rows: CPU p50 {np.median(T[k][5:]):.3f} ms min {np.min(T[k][5:]):.3f} | top-10 agreement with float64 {np.mean(agree[k]):.3f} | max abs err {np.max(err[k]):.2e}")
print("load", os.getloadavg())
