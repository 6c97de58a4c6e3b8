import time, os, numpy as np, faiss, zlib
from isr.app.runtime import set_threads
from isr.encoders.record import Encoded, Keywords
from isr.plugin.store.codecs import make_codec
set_threads(1)
rng = np.random.default_rng(0)
B, n, d = 256, 32, 256
x = rng.standard_normal((B, n, d)).astype(np.float32)
x /= np.linalg.norm(x, axis=2, keepdims=True)
f = rng.standard_normal((B, d)).astype(np.float32)
m = np.ones((B, n), bool)
kw = tuple(Keywords(("a", "b", "c"), (0.5, 0.3, 0.1)) for _ in range(B))
def t(fn, r=10):
    best = 1e9
    for _ in range(r):
        t0 = time.thread_time(); fn(); best = min(best, time.thread_time() - t0)
    return best / B * 1e6  # us per doc
print("load", os.getloadavg())
print("Encoded() us/doc", t(lambda: Encoded(f, x, m, kw)))
c16 = make_codec("fp16", d)
print("fp16 faiss encode us/doc", t(lambda: c16.encode(x)))
print("fp16 numpy astype us/doc", t(lambda: x.astype("<f2")))
a = c16.encode(x); b = x.astype("<f2").view(np.uint8).reshape(a.shape)
print("fp16 identical:", np.array_equal(a, b))
c8 = make_codec("sq8", d)
print("sq8 faiss encode us/doc", t(lambda: c8.encode(x)))
print("isfinite.all us/doc", t(lambda: np.isfinite(x).all(axis=2)))
print("sum-isfinite us/doc", t(lambda: np.isfinite(np.add.reduce(x, axis=2))))
print("zeros+copy us/doc", t(lambda: np.zeros((B, n, d), np.float32).__setitem__(slice(None), x)))
codes = c16.encode(x)
print("crc32 us/doc", t(lambda: zlib.crc32(codes.reshape(-1).data)))
# HNSW
xs = rng.standard_normal((5000, d)).astype(np.float32); xs /= np.linalg.norm(xs, axis=1, keepdims=True)
for storage in ("flat", "sq8"):
    if storage == "flat":
        h = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
    else:
        h = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit_uniform, 16, faiss.METRIC_INNER_PRODUCT)
        h.train(np.stack([-np.ones(d, np.float32), np.ones(d, np.float32)]))
    h.hnsw.efConstruction = 100
    t0 = time.thread_time(); w0 = time.perf_counter(); h.add(xs); 
    print(f"hnsw {storage} add 5000: cpu us/doc {(time.thread_time()-t0)/5000*1e6:.0f} wall {(time.perf_counter()-w0)/5000*1e6:.0f}")
print("load", os.getloadavg())
