"""The max-sim scorer against brute force: the kernel, chunked scoring, exhaustive top-k, CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from isr.errors import InvalidInput, NotFound
from isr.plugin.store.fragments import FragmentStore
from isr.plugin.store.maxsim import INT8_CPU, MaxSimScorer, maxsim

D = 16


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal((*shape, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_mask(rng: np.random.Generator, c: int, n: int) -> np.ndarray:
    """(c, n) masks with 1..n real slots at random positions; row 0 has exactly one."""
    m = np.zeros((c, n), bool)
    for i in range(c):
        k = 1 if i == 0 else int(rng.integers(1, n + 1))
        m[i, rng.choice(n, size=k, replace=False)] = True
    return m


def naive(q: np.ndarray, qm: np.ndarray, docs: np.ndarray, dm: np.ndarray) -> np.ndarray:
    """Eq. 5 as written: sum over real query fragments of the max over real doc fragments."""
    out = []
    for c in range(len(docs)):
        s = 0.0
        for i in range(len(q)):
            if not qm[i]:
                continue
            best = -float("inf")
            for j in range(docs.shape[1]):
                if dm[c, j]:
                    best = max(
                        best,
                        sum(float(a) * float(b) for a, b in zip(q[i], docs[c, j], strict=True)),
                    )
            s += best
        out.append(s)
    return np.array(out)


@pytest.mark.parametrize("nq", [1, 6])
def test_maxsim_matches_naive(nq: int) -> None:
    rng = np.random.default_rng(nq)
    docs = unit(rng, 40, 7)  # (C, n, d)
    dm = random_mask(rng, 40, 7)
    docs[~dm] = 5.0  # padding must not count, whatever it holds
    q = unit(rng, nq)
    qm = random_mask(rng, 1, nq)[0]
    q[~qm] = 5.0
    got = maxsim(
        torch.from_numpy(q), torch.from_numpy(qm), torch.from_numpy(docs), torch.from_numpy(dm)
    )
    assert got.dtype == torch.float32 and tuple(got.shape) == (40,)
    np.testing.assert_allclose(got.numpy(), naive(q, qm, docs, dm), rtol=1e-5, atol=1e-6)


def test_maxsim_single_fragment_docs_and_edge_cases() -> None:
    rng = np.random.default_rng(0)
    docs = unit(rng, 5, 1)  # every doc has one fragment
    q = unit(rng, 3)
    qm = np.array([True, False, True])
    dm = np.ones((5, 1), bool)
    got = maxsim(
        torch.from_numpy(q), torch.from_numpy(qm), torch.from_numpy(docs), torch.from_numpy(dm)
    )
    want = docs[:, 0] @ q[qm].T  # (5, 2): max over one fragment is that fragment
    np.testing.assert_allclose(got.numpy(), want.sum(1), rtol=1e-5)
    dm[2] = False  # a document without fragments cannot match
    got = maxsim(
        torch.from_numpy(q), torch.from_numpy(qm), torch.from_numpy(docs), torch.from_numpy(dm)
    )
    assert got[2] == -float("inf") and torch.isfinite(got[[0, 1, 3, 4]]).all()
    empty = maxsim(
        torch.from_numpy(q),
        torch.from_numpy(qm),
        torch.zeros(0, 4, D),
        torch.zeros(0, 4, dtype=torch.bool),
    )
    assert tuple(empty.shape) == (0,)
    with pytest.raises(InvalidInput, match="same d"):
        maxsim(
            torch.from_numpy(q),
            torch.from_numpy(qm),
            torch.zeros(2, 4, D + 1),
            torch.ones(2, 4, dtype=torch.bool),
        )


def test_maxsim_work_buffer() -> None:
    rng = np.random.default_rng(4)
    docs = torch.from_numpy(unit(rng, 9, 4))
    dm = torch.from_numpy(random_mask(rng, 9, 4))
    q = torch.from_numpy(unit(rng, 3))
    qm = torch.tensor([True, False, True])
    want = maxsim(q, qm, docs, dm)
    work = torch.full((9 * 4 * 2 + 5,), 3.0)  # larger than needed is fine
    torch.testing.assert_close(maxsim(q, qm, docs, dm, work=work), want, rtol=0, atol=0)
    with pytest.raises(InvalidInput, match="at least 72 elements"):
        maxsim(q, qm, docs, dm, work=torch.empty(71))


def test_score_is_chunked_and_exact() -> None:
    rng = np.random.default_rng(1)
    docs, dm = unit(rng, 50, 6), random_mask(rng, 50, 6)
    q, qm = unit(rng, 4), np.array([True, True, False, True])
    got = MaxSimScorer(device="cpu", chunk_rows=7).score(q, qm, docs, dm)
    assert got.dtype == np.float32 and got.shape == (50,)
    np.testing.assert_allclose(got, naive(q, qm, docs, dm), rtol=1e-5, atol=1e-6)
    sc = MaxSimScorer(device="cpu")
    with pytest.raises(InvalidInput, match="no real fragments"):
        sc.score(q, np.zeros(4, bool), docs, dm)
    with pytest.raises(InvalidInput, match=rf"shape \(nq, {D}\)"):
        sc.score(q[:, :3], qm, docs, dm)
    with pytest.raises(InvalidInput, match="mask"):
        sc.score(q, qm, docs, dm[:, :2])


def brute_top(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]


@pytest.mark.parametrize("codec", ["fp32", "sq8"])
def test_exhaustive_matches_brute_force(tmp_path: Path, codec: str) -> None:
    rng = np.random.default_rng(2)
    store = FragmentStore.create(tmp_path, D, 6, codec)
    for _ in range(3):  # several appends, so chunks straddle batches
        docs = unit(rng, 37, 8)
        dm = random_mask(rng, 37, 8)
        dm[:, 6:] = False
        dm[:, 0] = True  # keep every row within max_frags=6 and non-empty
        store.append(docs, dm)
    q, qm = unit(rng, 5), np.array([True, False, True, True, True])
    frags, mask = store.gather(np.arange(len(store)))  # decoded, as the scorer sees them
    all_scores = naive(q, qm, frags, mask).astype(np.float32)
    sc = MaxSimScorer(device="cpu", chunk_rows=16)
    split = MaxSimScorer(device="cpu", chunk_rows=8, workers=3)  # spans scored in parallel
    for rows, k in [
        (None, 10),
        (None, 1),
        (None, 500),
        (np.array([90, 3, 44, 17, 3, 108]), 4),
        (np.array([90, 3, 44, 17, 3, 108]), 50),
        (np.arange(110, 0, -2), 10),  # enough rows for the split scorer's spans
    ]:
        cand = np.arange(len(store)) if rows is None else np.unique(rows)
        want_s, want_r = brute_top(all_scores[cand], cand, k)
        got_s, got_r = sc.exhaustive(q, qm, store, k, rows)
        par_s, par_r = split.exhaustive(q, qm, store, k, rows)
        np.testing.assert_array_equal(par_r, got_r)
        np.testing.assert_array_equal(par_s, got_s)
        assert got_s.dtype == np.float32 and got_r.dtype == np.int64
        assert len(got_r) == min(k, len(cand))
        np.testing.assert_array_equal(got_r, want_r)
        np.testing.assert_allclose(got_s, want_s, rtol=1e-5, atol=1e-5)
        assert (np.diff(got_s) <= 0).all()
    with pytest.raises(InvalidInput, match="k must be"):
        sc.exhaustive(q, qm, store, 0)
    with pytest.raises(NotFound, match="row 111"):
        sc.exhaustive(q, qm, store, 3, np.array([111]))
    with pytest.raises(InvalidInput, match=rf"\(nq, {D}\)"):
        sc.exhaustive(q[:, :4], qm, store, 3)
    got_s, got_r = sc.exhaustive(q, qm, store, 3, np.array([], np.int64))
    assert got_s.shape == (0,) and got_r.shape == (0,)
    store.close()


def test_scorer_rejects_bad_settings() -> None:
    with pytest.raises(InvalidInput, match="chunk_rows"):
        MaxSimScorer(device="cpu", chunk_rows=0)
    with pytest.raises(InvalidInput, match="workers"):
        MaxSimScorer(device="cpu", workers=0)
    with pytest.raises(InvalidInput, match="dtype"):
        MaxSimScorer(device="cpu", dtype=torch.int8)
    with pytest.raises(InvalidInput, match="unknown device"):
        MaxSimScorer(device="tpu9")
    assert MaxSimScorer().device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA; none is present")
@pytest.mark.parametrize("codec", ["fp16", "sq8"])
def test_cuda_matches_cpu(tmp_path: Path, codec: str) -> None:
    rng = np.random.default_rng(3)
    store = FragmentStore.create(tmp_path, D, 8, codec)
    docs, dm = unit(rng, 3000, 8), random_mask(rng, 3000, 8)
    store.append(docs, dm)
    q, qm = unit(rng, 6), np.array([True] * 5 + [False])
    cpu = MaxSimScorer(device="cpu", chunk_rows=512)
    gpu = MaxSimScorer(device="cuda", chunk_rows=512)
    frags, mask = store.gather(np.arange(3000))
    np.testing.assert_allclose(
        gpu.score(q, qm, frags, mask), cpu.score(q, qm, frags, mask), rtol=1e-5, atol=1e-5
    )
    c_s, c_r = cpu.exhaustive(q, qm, store, 50)
    g_s, g_r = gpu.exhaustive(q, qm, store, 50)
    np.testing.assert_array_equal(g_r, c_r)
    np.testing.assert_allclose(g_s, c_s, rtol=1e-5, atol=1e-5)
    store.close()


def filled_store(
    tmp_path: Path, rng: np.random.Generator, n: int, slots: int, codec: str
) -> FragmentStore:
    """A store of n random documents, each with 1..slots real fragments."""
    store = FragmentStore.create(tmp_path, D, slots, codec)
    dm = random_mask(rng, n, slots)
    dm[:, 0] = True
    store.append(unit(rng, n, slots), dm)
    return store


@pytest.mark.parametrize("codec", ["fp16", "sq8"])
def test_score_rows_equals_scores_of_the_decoded_fragments(tmp_path: Path, codec: str) -> None:
    """The rerank path scores codes (sq8: raw codes with a scaled query) as the decoded floats."""
    rng = np.random.default_rng(5)
    store = filled_store(tmp_path, rng, 50, 8, codec)
    q, qm = unit(rng, 6), np.array([True, True, False, True, True, True])
    rows = np.array([49, 0, 7, 7, 23])
    frags, mask = store.gather(rows)
    want = naive(q, qm, frags, mask).astype(np.float32)
    got = MaxSimScorer(device="cpu", chunk_rows=2).score_rows(q, qm, store, rows)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    store.close()


@pytest.mark.parametrize("codec", ["fp16", "sq8"])
def test_exhaustive_many_equals_one_query_at_a_time(tmp_path: Path, codec: str) -> None:
    rng = np.random.default_rng(8)
    store = filled_store(tmp_path, rng, 90, 6, codec)
    q = np.stack([unit(rng, 5) for _ in range(4)])  # (Q, nq, d)
    qm = np.ones((4, 5), bool)
    qm[1, 3:] = False
    sc = MaxSimScorer(device="cpu")
    got_s, got_r = sc.exhaustive_many(q, qm, store, 7, work_elems=200)  # many small chunks
    for i in range(4):
        want_s, want_r = sc.exhaustive(q[i], qm[i], store, 7)
        np.testing.assert_array_equal(got_r[i], want_r)
        np.testing.assert_allclose(got_s[i], want_s, rtol=1e-5, atol=1e-5)
    with pytest.raises(InvalidInput, match=r"\(Q, nq, d\)"):
        sc.exhaustive_many(q[0], qm[0], store, 3)
    store.close()


@pytest.mark.skipif(not INT8_CPU, reason="this torch has no CPU int8 GEMM (torch._int_mm)")
def test_int8_path_equals_the_float_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sq8 codes scored in int8 (where the CPU has fast int8 kernels) give the float32 kernel's
    scores and ranking."""
    from isr.plugin.store import maxsim as ms

    monkeypatch.setattr(ms, "int8_fast", lambda: True)  # the int8 path, whatever this CPU is
    rng = np.random.default_rng(13)
    store = filled_store(tmp_path, rng, 300, 8, "sq8")  # padded rows: the mask path too
    q, qm = unit(rng, 7), np.array([True, True, True, False, True, True, True])
    q[1] *= 1e-3  # a small fragment: its own scale keeps its precision
    rows = rng.choice(300, 120, replace=True)
    sc = MaxSimScorer(device="cpu", chunk_rows=32)
    fast_rows = sc.score_rows(q, qm, store, rows)
    fast_s, fast_r = sc.exhaustive(q, qm, store, 25)
    monkeypatch.setattr(ms, "int8_fast", lambda: False)
    slow_rows = sc.score_rows(q, qm, store, rows)
    slow_s, slow_r = sc.exhaustive(q, qm, store, 25)
    np.testing.assert_allclose(fast_rows, slow_rows, rtol=1e-6, atol=2e-6)
    np.testing.assert_array_equal(fast_r, slow_r)
    np.testing.assert_allclose(fast_s, slow_s, rtol=1e-6, atol=2e-6)
    frags, mask = store.gather(rows)
    np.testing.assert_allclose(fast_rows, naive(q, qm, frags, mask), rtol=1e-5, atol=1e-5)
    store.close()


@pytest.mark.skipif(not INT8_CPU, reason="this torch has no CPU int8 GEMM (torch._int_mm)")
def test_int8_is_chosen_by_the_cpu_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 scoring only where its GEMM is fast: never below AVX-512 (torch's scalar fallback
    there was 17x slower than float32), timed above it; ISR_CPU_INT8 overrides both ways."""
    from isr.plugin.store import maxsim as ms

    calls: list[int] = []

    def timed(rounds: int = 5) -> bool:
        calls.append(rounds)
        return True

    monkeypatch.setattr(ms, "_int8_timed_faster", timed)
    cases = [("AVX2", "auto", False), ("AVX512", "auto", True), ("AVX2", "on", True),
             ("AVX512", "off", False), ("DEFAULT", "bogus", False)]  # fmt: skip
    try:
        for capability, env, want in cases:
            monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
            monkeypatch.setenv(ms.INT8_ENV, env)
            ms.int8_fast.cache_clear()
            assert ms.int8_fast() is want, (capability, env)
    finally:
        ms.int8_fast.cache_clear()  # the next caller decides for the real CPU
    assert calls == [5]  # timed once: AVX-512 on auto
