"""One-process A/B harness for the CPU rerank: main's float path written out inline ("old")
against the scorer's `score_rows` ("new"), alternating per query, the same rows, scores checked
equal. Session 7 ran it with an uncommitted variant of `score_rows` (per-thread reused gather,
decode and similarity buffers) as "new": slower, not kept; on main both sides are the same code.
usage: rr_scratch_ab.py <gallery>"""
import sys, time, numpy as np, torch
torch.set_num_threads(1)
from isr.plugin import EmbeddedIndex
from isr.plugin.store import maxsim as ms
idx = EmbeddedIndex.open(sys.argv[1], readonly=True); idx.preload()
st = idx.fragments; rng = np.random.default_rng(0)
sc = ms.MaxSimScorer(device="cpu")
def old(q, qm, store, rows):  # main's float path before this change
    qt, qm = sc._query(q, qm, store.d)
    out = np.empty(rows.shape[0], np.float32)
    slot = torch.arange(store.max_frags)
    qs, shift = ms._scoring_query(store.codec, qt, qm)
    for i in range(0, rows.shape[0], sc.chunk_rows):
        codes, cnt = store.gather_codes(rows[i : i + sc.chunk_rows])
        x = ms._code_floats(store.codec, torch.from_numpy(codes))
        m = slot[None, :] < torch.from_numpy(cnt)[:, None]
        out[i : i + len(cnt)] = ms.maxsim(qs, qm, x, m).numpy()
    return out + np.float32(shift)
T = {"old": [], "new": []}
for it in range(150):
    nq = int(rng.integers(6, 20))
    q = rng.standard_normal((nq, st.d)).astype(np.float32); q /= np.linalg.norm(q, axis=1, keepdims=True)
    qm = np.ones(nq, bool)
    rows = rng.choice(len(st), 200, replace=False)
    order = [("old", old), ("new", sc.score_rows)]
    if it % 2: order.reverse()
    res = {}
    for name, f in order:
        t = time.thread_time(); res[name] = f(q, qm, st, rows); T[name].append(time.thread_time() - t)
    assert np.allclose(res["old"], res["new"], rtol=1e-6, atol=1e-6)
for k, v in T.items(): print(k, "p50 %.3f p95 %.3f ms" % (np.median(v) * 1e3, np.percentile(v, 95) * 1e3))
