"""Session 3: gather + int8 GEMM of admitted sq8 codes, 4 KB pages vs transparent huge pages (CPU, 1 thread)."""
import mmap, os, time, numpy as np, torch
torch.set_num_threads(1)
tt = time.thread_time; N = 1_000_000; D = 256
rng = np.random.default_rng(0)
src = rng.integers(0, 255, (N, D), dtype=np.uint8)
def huge_array(shape, dtype):
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(m, dtype).reshape(shape), m
H, hm = huge_array((N, D), np.uint8); H[:] = src
print("AnonHugePages after", [l for l in open("/proc/meminfo") if "AnonHuge" in l])
idx = np.sort(rng.choice(N, 180_000, replace=False))
out = np.empty((180_000, D), np.uint8)
for name, arr in [("4K pages", src), ("huge pages", H)]:
    for _ in range(3):
        c = tt(); np.take(arr, idx, axis=0, out=out); d = tt() - c
    print(f"{name}: np.take 180K x 256 B {d*1e3:.2f} ms ({180_000*256/d/1e9:.1f} GB/s)")
    T = torch.from_numpy(arr); I = torch.from_numpy(idx)
    for _ in range(3):
        c = tt(); g = T.index_select(0, I); d = tt() - c
    print(f"{name}: torch index_select {d*1e3:.2f} ms")
    T64 = torch.from_numpy(arr.view(np.int64)); o64 = torch.empty((180_000, 32), dtype=torch.int64)
    for _ in range(3):
        c = tt(); torch.index_select(T64, 0, I, out=o64); d = tt() - c
    print(f"{name}: torch index_select as int64 rows {d*1e3:.2f} ms")
g8 = torch.from_numpy(out).view(torch.int8)
q16 = torch.randint(-127, 127, (256, 16), dtype=torch.int8)
q16t = torch.randint(-127, 127, (16, 256), dtype=torch.int8)
for _ in range(3):
    c = tt(); p = torch._int_mm(g8, q16); d = tt() - c
print(f"_int_mm (180K,256)x(256,16) {d*1e3:.2f} ms")
for _ in range(3):
    c = tt(); p = torch._int_mm(q16t, g8.T); d = tt() - c
print(f"_int_mm (16,256)x(256,180K) {d*1e3:.2f} ms")
gb = g8.to(torch.bfloat16); qb = torch.randn(256, 16).bfloat16()
for _ in range(3):
    c = tt(); p = gb @ qb; d = tt() - c
print(f"bf16 (180K,256)x(256,16) {d*1e3:.2f} ms")
for _ in range(3):
    c = tt(); gb = g8.to(torch.bfloat16); d = tt() - c
print(f"int8->bf16 convert {d*1e3:.2f} ms")
print(os.getloadavg())
