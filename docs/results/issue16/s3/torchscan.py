"""Session 3: an in-place sq8 scan in torch (gather admitted codes, int8 GEMM), CPU time, 1 thread."""
import os, sys, time, numpy as np, faiss, torch
from pathlib import Path
faiss.omp_set_num_threads(1); torch.set_num_threads(1)
P = Path("/work/wt/speed2/runs/bench/g1M-sq8-sq8-m16-efc100")
Z = np.load("/work/wt/speed2/runs/s3/adm1m.npz")
NQ = 20; N = 1_000_000
H = faiss.read_index(str(P / "hnsw.faiss")); S = faiss.downcast_index(H.storage)
codes = faiss.vector_to_array(S.codes).reshape(N, 256)
C = torch.from_numpy(codes)
C8 = torch.from_numpy(codes ^ 0x80).view(torch.int8)  # a pre-shifted copy
Q = Z["fast"][:NQ].astype(np.float32)
A = [Z[f"a{i}"] for i in range(NQ)]
tt = time.thread_time
def t(name, f, reps=NQ):
    for i in range(2): f(i)
    ts = []
    for i in range(reps):
        c = tt(); f(i); ts.append((tt() - c) * 1e3)
    print(f"{name:40s} p50 {np.percentile(ts,50):7.2f}  p95 {np.percentile(ts,95):7.2f} ms  (mean admitted {np.mean([len(a) for a in A]):.0f}) load {os.getloadavg()[0]:.1f}", flush=True)
idx = [torch.from_numpy(a.astype(np.int64)) for a in A]
t("idx from uint32", lambda i: torch.from_numpy(A[i].astype(np.int64)))
t("index_select u8", lambda i: C.index_select(0, idx[i]))
t("index_select + xor", lambda i: C.index_select(0, idx[i]).bitwise_xor_(0x80))
qr = torch.randint(-127, 127, (3, 256), dtype=torch.int8)
qr16 = torch.randint(-127, 127, (16, 256), dtype=torch.int8)
g8 = [C8.index_select(0, idx[i]) for i in range(3)]
t("_int_mm (3,256)x(256,m)", lambda i: torch._int_mm(qr, g8[i % 3].T), 3)
t("_int_mm (16,256)x(256,m)", lambda i: torch._int_mm(qr16, g8[i % 3].T), 3)
t("_int_mm (m,256)x(256,16)", lambda i: torch._int_mm(g8[i % 3], qr16.T.contiguous().T), 3)
t("float mv (m,256)", lambda i: torch.mv(g8[i % 3].float(), torch.randn(256)), 3)
qb = torch.randn(256).bfloat16()
t("bf16 convert + mv", lambda i: torch.mv(g8[i % 3].bfloat16(), qb), 3)
def fused(i):
    g = C8.index_select(0, idx[i])
    p = torch._int_mm(qr16, g.T)
    return torch.topk(p[0].float(), 464)
t("fused idx_select s8 + int_mm + topk", fused)
full = C8[:200_000]
t("_int_mm over contiguous 200K rows", lambda i: torch._int_mm(qr16, full.T), 3)
