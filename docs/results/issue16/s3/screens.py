"""Session 3: the real keyword screens of the 1M bench queries (seed 11, dumped by dump_adm.py)
and their exact filtered top-200, shared by the kNN trial scripts (post.py, sqv.py, ivf.py).
load(nq) -> P (gallery), N, X (fast.f32 map), Q (nq, 256), A (admitted rows per query),
tgt (each query's own row), truth (the exact top-200 row sets), K (200)."""
from pathlib import Path
import numpy as np
from isr.ingest.encoded_world import EncodedWorld, encoded_queries

P = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100"); N = 1_000_000; K = 200


def load(nq: int, populate: bool = False):
    Z = np.load("/work/wt/speed2/runs/s3/adm1m.npz")
    X = np.memmap(P / "fast.f32", np.float32, "r", shape=(N, 256))
    if populate:
        X._mmap.madvise(22)  # MADV_POPULATE_READ
    Q = Z["fast"][:nq].astype(np.float32); A = [Z[f"a{i}"].astype(np.int64) for i in range(nq)]
    _, tids = encoded_queries(EncodedWorld(n_docs=N), 100, seed=11); tgt = [int(t[4:]) for t in tids]
    truth = []
    for i in range(nq):
        s = np.asarray(X[A[i]]) @ Q[i]; truth.append(set(A[i][np.argsort(-s)[:K]].tolist()))
    return P, N, X, Q, A, tgt, truth, K

