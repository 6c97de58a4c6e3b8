"""The late-interaction scorer of Inflate-and-Shrink (Eq. 5): s(q, d) = sum_i max_j q_i . d_j.

Entry points: :func:`maxsim` (the torch kernel) and :class:`MaxSimScorer` (numpy in, numpy out;
chunked scoring of given fragments, and exhaustive top-k over a :class:`FragmentStore`).

i runs over the query's real fragments and j over the document's real fragments. With
L2-normalised fragments q_i . d_j is the cosine of the paper. The kernel is one GEMM over every
fragment of every candidate, (nq, d) @ (d, C*n), so its speed is the BLAS / cuBLAS speed; the
max over j and the sum over i are two reductions of the (nq, C, n) result.

On the CPU, sq8 codes are scored without decoding them (:class:`Int8Query`): the codes, shifted
to int8, meet the query split into three int8 rows per fragment (hi, mid, lo: 24 bits of it) in
one integer GEMM per candidate block (``torch._int_mm``, VNNI/AMX through oneDNN where the CPU
has them), whose exact int32 sums recombine to the float32 result within float32 rounding; the
gathered codes are read once, with no float copy of them. On CPUs without fast int8 kernels
(:func:`int8_fast`) the codes go through the float32 GEMM instead.

On CUDA the store's compact codes are copied to the device and decoded there
(:meth:`FragmentCodec.decode_torch`), so only code bytes cross PCIe. CPU and CUDA run the same
float32 arithmetic (no TF32 unless the caller enables it globally), so they give the same ranking
up to float rounding of near-ties.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import torch

from isr.device import pick_device
from isr.errors import InvalidInput
from isr.plugin.store.codecs import FragmentCodec
from isr.plugin.store.fragments import FragmentStore

__all__ = ["INT8_CPU", "Int8Query", "MaxSimScorer", "int8_fast", "maxsim"]

log = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CPU_CHUNK = 256
GPU_CHUNK = 32_768


def maxsim(
    q: torch.Tensor,
    q_mask: torch.Tensor,
    docs: torch.Tensor,
    doc_mask: torch.Tensor,
    *,
    work: torch.Tensor | None = None,
) -> torch.Tensor:
    """Max-sim scores of one query against C documents.

    q (nq, d), q_mask (nq,) bool, docs (C, n, d), doc_mask (C, n) bool -> (C,) float32.
    A document without real fragments scores -inf; a query without real fragments scores 0.
    All tensors must share one device; q and docs one dtype. ``work``, a contiguous tensor of
    docs' dtype and device with at least C * n * nq elements, holds the similarity matrix, so a
    caller scoring chunk after chunk allocates it once.
    """
    if q.ndim != 2 or docs.ndim != 3 or q.shape[1] != docs.shape[2]:
        raise InvalidInput(
            f"maxsim: expected q (nq, d) and docs (C, n, d) with the same d, "
            f"got {tuple(q.shape)} and {tuple(docs.shape)}"
        )
    if q_mask.shape != q.shape[:1] or doc_mask.shape != docs.shape[:2]:
        raise InvalidInput(
            f"maxsim: masks {tuple(q_mask.shape)}, {tuple(doc_mask.shape)} do not match "
            f"q {tuple(q.shape)}, docs {tuple(docs.shape)}"
        )
    if docs.shape[1] == 0:
        raise InvalidInput("maxsim: documents have 0 fragment slots")
    qv = q[q_mask]  # (nq', d): padding query fragments cost no flops
    return _fragment_maxima(qv, docs, doc_mask, work).sum(dim=0, dtype=torch.float32)  # (C,)


def _fragment_maxima(
    qv: torch.Tensor, docs: torch.Tensor, doc_mask: torch.Tensor, work: torch.Tensor | None = None
) -> torch.Tensor:
    """max over each document's real fragments of qv_i . d_j: (nq', C).

    qv (nq', d) holds real query fragments only (of one query, or of several stacked),
    docs (C, n, d), doc_mask (C, n) bool; ``work`` as in :func:`maxsim`.
    """
    c, n, d = docs.shape
    nv = qv.shape[0]
    flat = docs.reshape(c * n, d)
    # (nq', C*n): the query on the short side of the GEMM, so BLAS streams the documents once
    # with a wide output, and the max over a document's fragments reduces contiguous memory.
    if work is None:
        sim = torch.mm(qv, flat.T)
    else:
        if (
            work.numel() < c * n * nv
            or work.dtype != docs.dtype
            or work.device != docs.device
            or not work.is_contiguous()
        ):
            raise InvalidInput(
                f"maxsim: work must be contiguous {docs.dtype} on {docs.device} with at least "
                f"{c * n * nv} elements, got {work.dtype} {tuple(work.shape)} on {work.device}"
            )
        sim = work.view(-1)[: c * n * nv].view(nv, c * n)
        torch.mm(qv, flat.T, out=sim)
    # Padding fragments must never win the max. On the CPU a full mask (the usual case) skips
    # the pass; on a GPU the check would cost a device sync, more than the fill itself.
    if docs.device.type != "cpu" or not bool(doc_mask.all()):
        sim.masked_fill_(~doc_mask.reshape(1, c * n), float("-inf"))
    return sim.view(nv, c, n).amax(dim=2)  # (nq', C)


def _int_mm_works() -> bool:
    """Whether this torch has a CPU int8 GEMM (torch._int_mm, torch >= 2.2 on most builds)."""
    try:
        a = torch.ones((2, 8), dtype=torch.int8)
        return bool((torch._int_mm(a, a.T.contiguous()) == 8).all())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


INT8_CPU = _int_mm_works()
INT8_ENV = "ISR_CPU_INT8"  # "auto" (default), "on" or "off": whether sq8 codes are scored in int8


@functools.cache
def int8_fast() -> bool:
    """Whether the int8 GEMM is the faster way to score sq8 codes on this CPU (decided once).

    torch._int_mm is fast where oneDNN has int8 kernels for the CPU (AVX-512 VNNI, AMX), and a
    scalar fallback elsewhere: on an AVX2-only AMD EPYC, (36 x 128) @ (128 x 8,192) took 61 ms
    against 3.6 ms for the float32 GEMM (BENCHMARKS.md, issue 16, session 7), which made the
    1M rerank 48 ms. So: "off" below AVX-512 (torch.backends.cpu.get_cpu_capability), else both
    GEMMs timed at the rerank's shape (interleaved, best of 5) and the faster kept. The
    ISR_CPU_INT8 environment variable ("on" / "off") overrides the choice.
    """
    if not INT8_CPU:
        return False
    env = os.environ.get(INT8_ENV, "auto").strip().lower()
    if env in ("on", "off"):
        return env == "on"
    if env != "auto":
        log.warning("%s=%r is not one of auto, on, off: using auto", INT8_ENV, env)
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    return _int8_timed_faster()


def _int8_timed_faster(rounds: int = 5) -> bool:
    """Times both GEMMs at the rerank's shape (36 query rows, 256 candidates x 32 fragments)."""
    g = torch.Generator().manual_seed(0)
    q8 = torch.randint(-127, 128, (36, 128), dtype=torch.int8, generator=g)
    c8 = torch.randint(-127, 128, (256 * 32, 128), dtype=torch.int8, generator=g)
    qf, cf = q8.float(), c8.float()
    best = {"int8": float("inf"), "float": float("inf")}
    for _ in range(rounds):
        for name, f in (("int8", lambda: torch._int_mm(q8, c8.T)), ("float", lambda: qf @ cf.T)):
            t = time.perf_counter()
            f()
            best[name] = min(best[name], time.perf_counter() - t)
    return best["int8"] < best["float"]


_LEVEL = 254.0  # each level's residual, in [-0.5, 0.5], times this fits int8's [-127, 127]


class Int8Query:
    """A query prepared to score sq8 codes in int8 arithmetic on the CPU.

    With c = s + 128 (s: the code as int8) and sq8's decode a c + b, q . decode(c) =
    a (q . s) + (128 a + b) sum(q). Each real query fragment q_i is scaled by S_i = 127 /
    max|q_i| and split into int8 rows hi + mid / 254 + lo / 254**2 (error <= max|q_i| / (2 *
    254**2 * 127) per component, ~1e-7 relative: float32 level). One GEMM of the (3 nq', d)
    int8 rows against the candidates' (d, C*n) int8 codes gives exact int32 dot products;
    recombined in float32, the max over each document's fragments, weighted by a / S_i and
    summed over i, is the max-sim; add :attr:`const`.
    """

    def __init__(self, qv: torch.Tensor, affine: tuple[float, float]) -> None:
        a, b = affine
        # numpy float64 on a (nq', d) array: a dozen tiny torch ops would cost ~0.1 ms
        x = qv.detach().cpu().numpy().astype(np.float64)  # (nq', d)
        scale = 127.0 / np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-30)  # (nq', 1)
        x = x * scale
        hi = np.rint(x)
        r = (x - hi) * _LEVEL
        mid = np.rint(r)
        lo = np.clip(np.rint((r - mid) * _LEVEL), -127, 127)
        self.nv = int(qv.shape[0])
        rows = np.concatenate([hi, mid, lo]).astype(np.int8)  # (3 nq', d)
        self.rows = torch.from_numpy(rows)
        qhat = (hi + mid / _LEVEL + lo / _LEVEL**2) / scale  # what the GEMM sees, (nq', d)
        self.weight = torch.from_numpy((a / (scale[:, 0] * _LEVEL**2)).astype(np.float32))
        self.const = float((128.0 * a + b) * qhat.sum())

    def maxima(self, codes: torch.Tensor, cnt: torch.Tensor | None) -> torch.Tensor:
        """codes (c, n, d) uint8, overwritten (shifted to int8 in place; pass a copy), cnt (c,)
        real fragments per row or None when every slot is real -> weighted maxima (nq', c),
        whose column sums plus :attr:`const` are the max-sim scores."""
        c, n, d = codes.shape
        s8 = codes.bitwise_xor_(0x80).view(torch.int8).view(c * n, d)
        p = torch._int_mm(self.rows, s8.T)  # (3 nq', c*n) int32, exact
        v = self.nv
        t = p[:v].float().mul_(_LEVEL**2).add_(p[v : 2 * v].float().mul_(_LEVEL))
        t.add_(p[2 * v :].float())  # (nq', c*n) = 254**2 S_i q_i . s_j
        t = t.view(v, c, n)
        if cnt is not None:  # padding slots must never win the max
            pad = torch.arange(n)[None, :] >= cnt[:, None].long()  # (c, n)
            t.masked_fill_(pad[None], float("-inf"))
        return t.amax(dim=2).mul_(self.weight[:, None])  # (nq', c)


def _checked_query(q: np.ndarray, q_mask: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """A query's fragments (nq, d) as float32 and its bool mask (nq,), checked."""
    q = np.asarray(q)
    qm = np.asarray(q_mask)
    if q.ndim != 2 or q.shape[1] != d:
        raise InvalidInput(f"query: expected fragments of shape (nq, {d}), got {q.shape}")
    if qm.shape != q.shape[:1] or qm.dtype != np.bool_:
        raise InvalidInput(
            f"query: expected a bool mask of shape {q.shape[:1]}, got {qm.dtype} {qm.shape}"
        )
    if not qm.any():
        raise InvalidInput("query: the mask has no real fragments")
    if not np.isfinite(q[qm]).all():
        raise InvalidInput("query: fragments hold NaN or inf values")
    return np.ascontiguousarray(q, dtype=np.float32), qm


def _int8_path(codec: FragmentCodec, device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cpu" and dtype == torch.float32 and codec.name == "sq8" and int8_fast()


def _scoring_query(
    codec: FragmentCodec, qt: torch.Tensor, qm: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """The query to score ``codec``'s codes with (:func:`_code_floats`), and the constant to add
    to every score. sq8: the query scaled by a, plus b * sum(q) (see FragmentCodec.affine), so
    the codes skip the decode's arithmetic; other codecs: the query itself and 0."""
    affine = codec.affine()
    if affine is None:
        return qt, 0.0
    return qt * affine[0], affine[1] * float(qt[qm].sum())


def _code_floats(
    codec: FragmentCodec, codes: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """(..., code_size) uint8 codes -> (..., d) float32 for the query of :func:`_scoring_query`:
    decoded, or for sq8 the raw codes as floats. ``out`` as in ``decode_torch``."""
    if codec.affine() is None:
        return codec.decode_torch(codes, out=out)
    return codes.float() if out is None else out.copy_(codes)


class MaxSimScorer:
    """Scores queries against fragments with :func:`maxsim`, ``chunk_rows`` documents at a time.

    device: None picks "cuda" when available, else "cpu". chunk_rows: None picks 256 on the CPU
    (a chunk's decoded fragments and similarities stay in the core's cache, which measured
    faster than large GEMMs) and 32,768 on CUDA (large launches fill the device). dtype: the
    GEMM's dtype (float32 default; float16/bfloat16 are for CUDA, where they trade a little
    accuracy for speed). workers: threads an exhaustive scan splits the candidates across;
    each runs torch ops on its own, so pair workers > 1 with one torch thread
    (:func:`isr.app.runtime.set_threads`): on small CPUs this beats torch's own
    intra-op threads, which fork and join on every small GEMM.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        chunk_rows: int | None = None,
        dtype: torch.dtype = torch.float32,
        workers: int = 1,
    ) -> None:
        self.device = pick_device(device, "scorer")
        if chunk_rows is None:
            chunk_rows = CPU_CHUNK if self.device.type == "cpu" else GPU_CHUNK
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise InvalidInput(f"scorer: chunk_rows must be an integer >= 1, got {chunk_rows!r}")
        if dtype not in _DTYPES:
            raise InvalidInput(f"scorer: dtype must be one of {list(_DTYPES)}, got {dtype}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidInput(f"scorer: workers must be an integer >= 1, got {workers!r}")
        self.chunk_rows = chunk_rows
        self.workers = workers
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"MaxSimScorer(device={str(self.device)!r}, chunk_rows={self.chunk_rows})"

    def _query(
        self, q: np.ndarray, q_mask: np.ndarray, d: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        qn, qm = _checked_query(q, q_mask, d)
        qt = torch.from_numpy(qn)
        return qt.to(self.device, self.dtype), torch.from_numpy(qm).to(self.device)

    def score(
        self, q: np.ndarray, q_mask: np.ndarray, frags: np.ndarray, mask: np.ndarray
    ) -> np.ndarray:
        """q (nq, d), q_mask (nq,), frags (C, n, d), mask (C, n) -> scores (C,) float32."""
        frags = np.asarray(frags)
        mask = np.asarray(mask)
        if frags.ndim != 3:
            raise InvalidInput(f"fragments: expected shape (C, n, d), got {frags.shape}")
        if mask.shape != frags.shape[:2] or mask.dtype != np.bool_:
            raise InvalidInput(
                f"mask: expected bool of shape {frags.shape[:2]}, got {mask.dtype} {mask.shape}"
            )
        qt, qm = self._query(q, q_mask, frags.shape[2])
        c, n = mask.shape
        out = np.empty(c, np.float32)  # (C,)
        work = self._work(min(c, self.chunk_rows) * n * int(qm.sum()))
        for i in range(0, c, self.chunk_rows):
            j = min(i + self.chunk_rows, c)
            x = torch.from_numpy(np.ascontiguousarray(frags[i:j], dtype=np.float32))
            m = torch.from_numpy(np.ascontiguousarray(mask[i:j]))
            s = maxsim(qt, qm, x.to(self.device, self.dtype), m.to(self.device), work=work)
            out[i:j] = s.cpu().numpy()
        return out

    def score_rows(
        self, q: np.ndarray, q_mask: np.ndarray, store: FragmentStore, rows: np.ndarray
    ) -> np.ndarray:
        """Max-sim of the query against the given rows of ``store`` -> (C,) float32, in row order.

        The rerank path: gathers the rows' codes and decodes them on the scorer's device
        (cheaper than decoding to float32 in numpy first, and only codes cross PCIe on CUDA).
        """
        rows = np.asarray(rows, dtype=np.int64)
        if self.device.type == "cpu" and not _int8_path(store.codec, self.device, self.dtype):
            return self._score_rows_cpu(q, q_mask, store, rows)
        qt, qm = self._query(q, q_mask, store.d)
        out = np.empty(rows.shape[0], np.float32)  # (C,)
        if _int8_path(store.codec, self.device, self.dtype):
            affine = store.codec.affine()
            assert affine is not None
            prep = Int8Query(qt[qm], affine)
            for i in range(0, rows.shape[0], self.chunk_rows):
                codes, cnt = store.gather_codes(rows[i : i + self.chunk_rows])  # a copy
                full = int(cnt.min(initial=store.max_frags)) == store.max_frags
                ct = None if full else torch.from_numpy(cnt)
                out[i : i + len(cnt)] = prep.maxima(torch.from_numpy(codes), ct).sum(0).numpy()
            return out + np.float32(prep.const)
        slot = torch.arange(store.max_frags, device=self.device)
        qs, shift = _scoring_query(store.codec, qt, qm)
        for i in range(0, rows.shape[0], self.chunk_rows):
            codes, cnt = store.gather_codes(rows[i : i + self.chunk_rows])
            x = _code_floats(store.codec, torch.from_numpy(codes).to(self.device))
            m = slot[None, :] < torch.from_numpy(cnt).to(self.device)[:, None]  # (c, max_frags)
            out[i : i + len(cnt)] = maxsim(qs, qm, x.to(self.dtype), m).cpu().numpy()
        return out + np.float32(shift)

    def _score_rows_cpu(
        self, q: np.ndarray, q_mask: np.ndarray, store: FragmentStore, rows: np.ndarray
    ) -> np.ndarray:
        """:meth:`score_rows` on the CPU's float GEMM, with as few small ops as it needs: the
        query prepared in numpy, one GEMM, max and sum per chunk, the padding mask built only
        when a row has padding. Each torch call on a tiny tensor costs ~50-100 us once a
        rerank's codes have evicted the interpreter from the caches (the query's checks, scaling
        and mask were ~0.5 ms of a 2 ms rerank of 200 rows at 1M: BENCHMARKS.md, issue 16,
        session 8); the arithmetic is :func:`maxsim`'s, on the same operands."""
        qn, qm = _checked_query(q, q_mask, store.d)
        real = qn[qm]  # (nq', d): padding query fragments cost no flops
        affine = store.codec.affine()
        shift = 0.0
        if affine is not None:  # sq8: the raw codes as floats (see _scoring_query)
            shift = affine[1] * float(real.sum(dtype=np.float64))
            real = real * np.float32(affine[0])
        qt = torch.from_numpy(np.ascontiguousarray(real)).to(self.dtype)
        nv, nf, d = qt.shape[0], store.max_frags, store.d
        out = np.empty(rows.shape[0], np.float32)  # (C,)
        for i in range(0, rows.shape[0], self.chunk_rows):
            codes, cnt = store.gather_codes(rows[i : i + self.chunk_rows])
            c = int(cnt.shape[0])
            x = _code_floats(store.codec, torch.from_numpy(codes)).to(self.dtype)
            sim = torch.mm(qt, x.view(c * nf, d).T)  # (nq', c * nf)
            if int(cnt.min(initial=nf)) < nf:  # padding fragments must never win the max
                pad = np.arange(nf)[None, :] >= cnt[:, None]  # (c, nf)
                sim.masked_fill_(torch.from_numpy(pad.reshape(1, c * nf)), float("-inf"))
            out[i : i + c] = sim.view(nv, c, nf).amax(dim=2).sum(dim=0, dtype=torch.float32).numpy()
        return out + np.float32(shift)

    def _work(self, numel: int) -> torch.Tensor:
        # One scratch buffer per call, not per scorer: calls may run in several threads.
        return torch.empty(numel, dtype=self.dtype, device=self.device)

    def exhaustive(
        self,
        q: np.ndarray,
        q_mask: np.ndarray,
        store: FragmentStore,
        k: int,
        rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows of ``store`` (or of ``rows``, deduplicated) by max-sim with the query.

        Returns (scores (k',) float32 descending, rows (k',) int64), k' = min(k, candidates);
        equal scores are ordered by row. Streams the store chunk by chunk, keeping a running
        top-k on the device, so the gallery is never materialised.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInput(f"k must be an integer >= 1, got {k!r}")
        qt, qm = self._query(q, q_mask, store.d)
        if rows is not None:
            rows = np.asarray(rows)
            if rows.ndim != 1:
                raise InvalidInput(f"rows: expected a 1-d array of row numbers, got {rows.shape}")
            rows = np.unique(rows)  # sorted: sequential reads; unique: no duplicate hits
        nf = store.max_frags
        slot = torch.arange(nf, device=self.device)  # (max_frags,)
        total = len(store) if rows is None else int(rows.shape[0])
        qs, shift = _scoring_query(store.codec, qt, qm)
        # every score kept, one top-k at the end: cheaper than a running top-k per small chunk
        scores_all = torch.empty(total, dtype=torch.float32, device=self.device)
        rows_all = np.empty(total, dtype=np.int64)
        nv = int(qm.sum())

        int8 = _int8_path(store.codec, self.device, self.dtype)
        prep = Int8Query(qt[qm], store.codec.affine() or (1.0, 0.0)) if int8 else None

        def scan8(start: int, stop: int) -> None:
            """scan() on the int8 path: the chunk's codes copied once into a buffer, shifted."""
            assert prep is not None
            buf = torch.empty((self.chunk_rows, nf, store.codec.code_size), dtype=torch.uint8)
            pos = start
            part = None if rows is None else rows[start:stop]
            span = (start, stop) if rows is None else None
            for r, codes, cnt in store.iter_code_chunks(self.chunk_rows, part, span):
                c = len(r)
                x = buf[:c]
                x.copy_(torch.from_numpy(codes))  # views of the map are never written
                full = int(cnt.min(initial=nf)) == nf
                mx = prep.maxima(x, None if full else torch.from_numpy(cnt))
                scores_all[pos : pos + c] = mx.sum(0)
                rows_all[pos : pos + c] = r
                pos += c

        def scan(start: int, stop: int) -> None:
            """Score positions [start, stop) of the candidates (rows, or the whole store)."""
            if int8:
                scan8(start, stop)
                return
            dec = torch.empty((0, nf, store.d), dtype=torch.float32, device=self.device)
            work = self._work(0)
            pos = start
            part = None if rows is None else rows[start:stop]
            span = (start, stop) if rows is None else None
            for r, codes, cnt in store.iter_code_chunks(self.chunk_rows, part, span):
                if len(r) > dec.shape[0]:  # the first chunk is the largest: allocate once
                    dec = torch.empty(
                        (len(r), nf, store.d), dtype=torch.float32, device=self.device
                    )
                    work = self._work(len(r) * nf * nv)
                ct = torch.from_numpy(codes).to(self.device)  # (c, max_frags, code_size) uint8
                x = _code_floats(store.codec, ct, out=dec[: len(r)])  # (c, max_frags, d)
                m = slot[None, :] < torch.from_numpy(cnt).to(self.device)[:, None]  # (c, nf)
                scores_all[pos : pos + len(r)] = maxsim(qs, qm, x.to(self.dtype), m, work=work)
                rows_all[pos : pos + len(r)] = r
                pos += len(r)

        bounds = np.linspace(0, total, self.workers + 1).astype(int)
        if self.workers == 1 or total < 2 * self.chunk_rows:
            scan(0, total)
        else:  # torch releases the GIL inside its ops: the spans run in parallel
            with ThreadPoolExecutor(self.workers) as pool:
                for f in [pool.submit(scan, lo, hi) for lo, hi in pairwise(bounds)]:
                    f.result()

        scores_all += prep.const if prep is not None else shift
        top = torch.topk(scores_all, min(int(k), total))
        best_s, best_r = top.values, rows_all[top.indices.cpu().numpy()]
        scores, ids = best_s.cpu().numpy(), best_r
        order = np.lexsort((ids, -scores))  # ties by row, the same on every device
        return scores[order].astype(np.float32), ids[order].astype(np.int64)

    def exhaustive_many(
        self,
        q: np.ndarray,
        q_mask: np.ndarray,
        store: FragmentStore,
        k: int,
        work_elems: int = 4 * 2**20,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows of the whole store for each of Q queries, in one pass over the store.

        q (Q, nq, d), q_mask (Q, nq) -> (scores (Q, k') float32 descending, rows (Q, k')
        int64), the same top-k as :meth:`exhaustive` per query (equal scores by row). For
        evaluation: every query's fragments go into one GEMM per chunk, (T, d) @ (d, C*n)
        with T the queries' real fragments, and a (Q, T) 0/1 matrix sums each query's
        maxima, so the store is read and converted once rather than Q times. ``work_elems``
        bounds the similarity block, T * C * n, which sets the chunk size.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInput(f"k must be an integer >= 1, got {k!r}")
        q, q_mask = np.asarray(q), np.asarray(q_mask)
        if q.ndim != 3 or q_mask.shape != q.shape[:2]:
            raise InvalidInput(
                f"queries: expected fragments (Q, nq, d) and a mask (Q, nq), got {q.shape} "
                f"and {q_mask.shape}"
            )
        parts = [self._query(q[i], q_mask[i], store.d) for i in range(q.shape[0])]
        scoring = [_scoring_query(store.codec, qt, qm) for qt, qm in parts]
        qv = torch.cat([qs[qm] for (qs, _), (_, qm) in zip(scoring, parts)])  # (T, d)
        shift = torch.tensor([sh for _, sh in scoring], dtype=torch.float32, device=self.device)
        owner = torch.cat(
            [torch.full((int(qm.sum()),), i, device=self.device) for i, (_, qm) in enumerate(parts)]
        )
        seg = torch.zeros((len(parts), qv.shape[0]), dtype=self.dtype, device=self.device)
        seg[owner, torch.arange(qv.shape[0], device=self.device)] = 1.0  # (Q, T)
        nf, t = store.max_frags, qv.shape[0]
        chunk = max(1, work_elems // max(1, t * nf))
        slot = torch.arange(nf, device=self.device)
        best_s = torch.empty((len(parts), 0), dtype=torch.float32, device=self.device)
        best_r = torch.empty((len(parts), 0), dtype=torch.int64, device=self.device)
        for r, codes, cnt in store.iter_code_chunks(chunk):
            x = _code_floats(store.codec, torch.from_numpy(codes).to(self.device))  # (c, nf, d)
            c = x.shape[0]
            m = slot[None, :] < torch.from_numpy(cnt).to(self.device)[:, None]  # (c, nf)
            mx = _fragment_maxima(qv, x.to(self.dtype), m)  # (T, c); no empty documents
            sc = (seg @ mx).float() + shift[:, None]  # (Q, c)
            rr = torch.from_numpy(r).to(self.device).expand(len(parts), c)
            s_all = torch.cat([best_s, sc], dim=1)
            r_all = torch.cat([best_r, rr], dim=1)
            top = torch.topk(s_all, min(int(k), s_all.shape[1]), dim=1)
            best_s, best_r = top.values, torch.gather(r_all, 1, top.indices)
        scores, ids = best_s.cpu().numpy(), best_r.cpu().numpy()
        for i in range(scores.shape[0]):
            order = np.lexsort((ids[i], -scores[i]))
            scores[i], ids[i] = scores[i][order], ids[i][order]
        return scores.astype(np.float32), ids.astype(np.int64)
