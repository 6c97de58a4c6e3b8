"""Session 3: float32 rescoring of ~3,000 sorted rows of the 1M fast vectors (populated map): FastIndex._dots (torch mv per 1,024-row block) vs faiss.fvec_inner_products_by_idx (CPU, 1 thread)."""
import os, time, numpy as np, faiss, torch
from pathlib import Path
from isr.plugin.config import read_manifest
from isr.plugin.embedded.fast_index import FastIndex
torch.set_num_threads(1); faiss.omp_set_num_threads(1)
P = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100"); cfg, _ = read_manifest(P)
fi = FastIndex(P, cfg, 1_000_000, readonly=True); fi.vectors.map_in()
view = fi.vectors.view(); rng = np.random.default_rng(0); tt = time.thread_time
def faiss_dots(rows, q):
    out = np.empty((1, len(rows)), np.float32)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(view), faiss.swig_ptr(rows.reshape(1, -1)), 256, 1, len(rows))
    return out[0]
for m in (464, 3000):
    T = {"torch _dots": [], "faiss by_idx": []}
    for rep in range(40):
        rows = np.sort(rng.choice(1_000_000, m, replace=False)).astype(np.int64); q = rng.standard_normal(256).astype(np.float32)
        for name in (list(T) if rep % 2 else list(T)[::-1]):
            c = tt(); s = fi._dots(rows, q) if name.startswith("torch") else faiss_dots(rows, q); T[name].append((tt() - c) * 1e3)
        assert np.allclose(fi._dots(rows, q), faiss_dots(rows, q), atol=1e-5)
    print(m, {k: round(float(np.median(v[4:])), 3) for k, v in T.items()}, "load", os.getloadavg()[0], flush=True)
