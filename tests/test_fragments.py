"""The fragment store: append, gather, reopen, crash-tail truncation, corruption and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from isr.errors import Conflict, CorruptIndex, InvalidInput, IsrError, NotFound
from isr.plugin.store.codecs import CODECS
from isr.plugin.store.fragments import FragmentStore

D = 16
MAXF = 5
ATOL = {"fp32": 0.0, "fp16": 1e-3, "sq8": 1 / 255 + 1e-6}


def batch(b: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """b rows of n unit fragments, each row with 1..min(n, MAXF) real ones at random slots."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, n, D)).astype(np.float32)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    m = np.zeros((b, n), bool)
    for i in range(b):
        k = int(rng.integers(1, min(n, MAXF) + 1))
        m[i, rng.choice(n, size=k, replace=False)] = True
    x[~m] = 99.0  # padding values must never be read
    return x, m


def packed(x: np.ndarray, m: np.ndarray) -> list[np.ndarray]:
    """The real fragments of each row in their original order."""
    return [x[i][m[i]] for i in range(len(x))]


def check_rows(store: FragmentStore, rows: np.ndarray, want: list[np.ndarray], atol: float) -> None:
    frags, mask = store.gather(rows)
    assert frags.shape == (len(rows), MAXF, D) and frags.dtype == np.float32
    assert mask.shape == (len(rows), MAXF) and mask.dtype == np.bool_
    for j, r in enumerate(rows):
        k = len(want[r])
        np.testing.assert_array_equal(mask[j], np.arange(MAXF) < k)
        np.testing.assert_allclose(frags[j, :k], want[r], rtol=0, atol=atol)
        np.testing.assert_array_equal(frags[j, k:], 0.0)  # padding slots are zero vectors
    np.testing.assert_array_equal(store.counts(rows), [len(want[r]) for r in rows])


@pytest.mark.parametrize("codec", CODECS)
def test_append_gather_reopen(tmp_path: Path, codec: str) -> None:
    store = FragmentStore.create(tmp_path / "frag", D, MAXF, codec)
    want: list[np.ndarray] = []
    # n below, equal to and above max_frags (extra slots masked out)
    for seed, (b, n) in enumerate([(7, 3), (1, MAXF), (11, 9), (4, 1)]):
        x, m = batch(b, n, seed)
        store.append(x, m)
        want += packed(x, m)
        assert len(store) == len(want)
        check_rows(store, np.arange(len(want)), want, ATOL[codec])  # reads see unsynced rows
    store.sync()
    store.close()
    assert store.nbytes_per_row() == MAXF * {"fp32": 4, "fp16": 2, "sq8": 1}[codec] * D + 1
    size = (tmp_path / "frag" / "fragments.bin").stat().st_size
    assert size == len(want) * MAXF * store.codec.code_size

    again = FragmentStore.open(tmp_path / "frag", D, MAXF, codec, n_rows=len(want))
    assert len(again) == len(want)
    rows = np.array([22, 0, 5, 5, 13])  # any order, repeats allowed
    check_rows(again, rows, want, ATOL[codec])
    x, m = batch(3, 4, 9)
    again.append(x, m)
    want += packed(x, m)
    check_rows(again, np.arange(len(want)), want, ATOL[codec])
    again.close()


def test_prefix_and_scattered_masks_store_the_same(tmp_path: Path) -> None:
    x, m = batch(9, 8, 5)  # real fragments at scattered slots
    cnt = m.sum(1)
    prefix = np.arange(8)[None, :] < cnt[:, None]  # the same fragments, already compacted
    xp = np.full_like(x, 99.0)
    for i in range(len(x)):
        xp[i, : cnt[i]] = x[i][m[i]]
    with FragmentStore.create(tmp_path / "a", D, MAXF, "fp32") as a:
        a.append(x, m)
        with FragmentStore.create(tmp_path / "b", D, MAXF, "fp32") as b:
            b.append(xp, prefix)
            fa, ma = a.gather(np.arange(9))
            fb, mb = b.gather(np.arange(9))
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(ma, mb)
    assert (tmp_path / "a" / "fragments.bin").read_bytes() == (
        tmp_path / "b" / "fragments.bin"
    ).read_bytes()


def test_iter_chunks_matches_gather(tmp_path: Path) -> None:
    with FragmentStore.create(tmp_path, D, MAXF, "fp16") as store:
        x, m = batch(23, 6, 0)
        store.append(x, m)
        for rows in (None, np.array([1, 4, 5, 9, 17, 22])):
            seen = list(store.iter_chunks(4, rows))
            ids = np.concatenate([r for r, _, _ in seen])
            np.testing.assert_array_equal(ids, np.arange(23) if rows is None else rows)
            assert all(len(r) <= 4 for r, _, _ in seen)
            frags, mask = store.gather(ids)
            np.testing.assert_array_equal(np.concatenate([f for _, f, _ in seen]), frags)
            np.testing.assert_array_equal(np.concatenate([k for _, _, k in seen]), mask)
            codes = np.concatenate([c for _, c, _ in store.iter_code_chunks(4, rows)])
            np.testing.assert_array_equal(store.codec.decode(codes), frags)
        assert list(store.iter_chunks(4, np.array([], np.int64))) == []
        with pytest.raises(InvalidInput, match="chunk"):
            next(store.iter_chunks(0))


def test_empty_store(tmp_path: Path) -> None:
    with FragmentStore.create(tmp_path, D, MAXF, "sq8") as store:
        assert len(store) == 0
        assert list(store.iter_chunks(8)) == []
        frags, mask = store.gather(np.array([], np.int64))
        assert frags.shape == (0, MAXF, D) and mask.shape == (0, MAXF)
        store.append(*batch(0, 3, 0))  # an empty batch is a no-op
        assert len(store) == 0
    with FragmentStore.open(tmp_path, D, MAXF, "sq8", n_rows=0) as store:
        assert len(store) == 0


@pytest.mark.parametrize("codec", ["fp16", "sq8"])
def test_uncommitted_tail_is_truncated(tmp_path: Path, codec: str) -> None:
    store = FragmentStore.create(tmp_path, D, MAXF, codec)
    x, m = batch(6, 4, 0)
    store.append(x, m)
    store.sync()  # the index would commit 6 rows here
    store.append(*batch(3, 4, 1))  # never committed
    store.close()
    with open(tmp_path / "fragments.bin", "ab") as fh:  # plus a half-written row
        fh.write(b"\x07" * 5)

    store = FragmentStore.open(tmp_path, D, MAXF, codec, n_rows=6)
    assert len(store) == 6
    assert (tmp_path / "fragments.bin").stat().st_size == 6 * MAXF * store.codec.code_size
    assert (tmp_path / "counts.u8").stat().st_size == 6
    with pytest.raises(NotFound, match="row 6"):
        store.gather(np.array([6]))
    want = packed(x, m)
    y, n = batch(2, 4, 2)
    store.append(y, n)  # new rows land right after the committed ones
    want += packed(y, n)
    check_rows(store, np.arange(8), want, ATOL[codec])
    store.close()


def test_short_files_are_corrupt(tmp_path: Path) -> None:
    store = FragmentStore.create(tmp_path, D, MAXF, "fp32")
    store.append(*batch(4, 3, 0))
    store.sync()
    store.close()
    row = MAXF * 4 * D
    with pytest.raises(CorruptIndex, match=rf"fragments\.bin holds {4 * row} bytes.*5 committed"):
        FragmentStore.open(tmp_path, D, MAXF, "fp32", n_rows=5)
    with open(tmp_path / "fragments.bin", "ab") as fh:
        fh.write(b"\0" * row)
    with pytest.raises(CorruptIndex, match=r"counts\.u8 holds 4 bytes.*5 committed"):
        FragmentStore.open(tmp_path, D, MAXF, "fp32", n_rows=5)
    (tmp_path / "counts.u8").unlink()
    with pytest.raises(CorruptIndex, match=r"counts\.u8 is missing"):
        FragmentStore.open(tmp_path, D, MAXF, "fp32", n_rows=4)


def test_bad_count_is_corrupt(tmp_path: Path) -> None:
    FragmentStore.create(tmp_path, D, MAXF, "sq8").close()
    with open(tmp_path / "fragments.bin", "ab") as fh:
        fh.write(b"\0" * 2 * MAXF * D)
    (tmp_path / "counts.u8").write_bytes(bytes([2, 0]))
    with pytest.raises(CorruptIndex, match="row 1 has count 0"):
        FragmentStore.open(tmp_path, D, MAXF, "sq8", n_rows=2)


def test_layout_mismatch_and_existing_store(tmp_path: Path) -> None:
    FragmentStore.create(tmp_path, D, MAXF, "fp16").close()
    with pytest.raises(Conflict, match="already exists"):
        FragmentStore.create(tmp_path, D, MAXF, "fp16")
    with pytest.raises(Conflict, match="codec='fp16' on disk, 'sq8' asked"):
        FragmentStore.open(tmp_path, D, MAXF, "sq8", n_rows=0)
    with pytest.raises(Conflict, match="max_frags=5 on disk, 6 asked"):
        FragmentStore.open(tmp_path, D, 6, "fp16", n_rows=0)
    with pytest.raises(NotFound, match="no directory"):
        FragmentStore.open(tmp_path / "nope", D, MAXF, "fp16", n_rows=0)
    with pytest.raises(InvalidInput, match="n_rows"):
        FragmentStore.open(tmp_path, D, MAXF, "fp16", n_rows=-1)


def test_bad_layout_arguments(tmp_path: Path) -> None:
    for maxf in (0, 65):
        with pytest.raises(InvalidInput, match=r"max_frags must be an integer in \[1, 64\]"):
            FragmentStore.create(tmp_path / str(maxf), D, maxf, "fp16")
    with pytest.raises(InvalidInput, match="valid codecs"):
        FragmentStore.create(tmp_path / "x", D, MAXF, "pq")
    FragmentStore.create(tmp_path / "64", D, 64, "fp16").close()


def test_append_rejects_bad_input(tmp_path: Path) -> None:
    store = FragmentStore.create(tmp_path, D, MAXF, "fp16")
    x, m = batch(4, 7, 0)
    with pytest.raises(InvalidInput, match=f"expected dimension d={D}, got d={D + 1}"):
        store.append(np.zeros((4, 7, D + 1), np.float32), m)
    too_many = m.copy()
    too_many[2] = np.arange(7) < 6
    with pytest.raises(
        InvalidInput, match=r"document 2 .* 6 real fragments, more than max_frags=5"
    ):
        store.append(x, too_many)
    empty = m.copy()
    empty[3] = False
    with pytest.raises(InvalidInput, match=r"document 3 .* no real fragments"):
        store.append(x, empty)
    nan = x.copy()
    nan[1, np.argmax(m[1])] = np.nan
    with pytest.raises(InvalidInput, match=r"document 1 fragment .* NaN"):
        store.append(nan, m)
    with pytest.raises(InvalidInput, match="mask: expected shape"):
        store.append(x, m[:, :3])
    with pytest.raises(InvalidInput, match="dtype bool"):
        store.append(x, m.astype(np.int8))
    with pytest.raises(InvalidInput, match=r"shape \(B, n, d\)"):
        store.append(x[0], m[0])
    assert len(store) == 0  # nothing half-written
    x[~m] = np.nan  # non-finite padding is ignored
    store.append(x, m)
    assert len(store) == 4 and np.isfinite(store.gather(np.arange(4))[0]).all()
    store.close()


def test_gather_rejects_bad_rows(tmp_path: Path) -> None:
    store = FragmentStore.create(tmp_path, D, MAXF, "fp16")
    store.append(*batch(3, 3, 0))
    with pytest.raises(NotFound, match="row 3 does not exist; the fragment store holds 3 rows"):
        store.gather(np.array([0, 3]))
    with pytest.raises(InvalidInput, match=">= 0"):
        store.gather(np.array([-1]))
    with pytest.raises(InvalidInput, match="integer"):
        store.counts(np.array([0.5]))
    with pytest.raises(InvalidInput, match="1-d"):
        store.gather(np.array([[0]]))
    store.close()
    with pytest.raises(IsrError, match="closed"):
        store.gather(np.array([0]))
    with pytest.raises(IsrError, match="closed"):
        store.append(*batch(1, 3, 1))


def test_full_rows_and_huge_finite_values(tmp_path: Path) -> None:
    # every slot real: encoded without the padded copy, the same bytes as through it; finite
    # values whose sum overflows float32 are not taken for NaN or inf, an inf still is
    store = FragmentStore.create(tmp_path / "a", D, MAXF, "fp32")
    other = FragmentStore.create(tmp_path / "b", D, MAXF, "fp32")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, MAXF, D)).astype(np.float32)
    x[0, 1] = 3e38  # sums to inf in float32, every value finite
    full = np.ones((3, MAXF), bool)
    store.append(x, full)
    wide = np.concatenate([x, np.zeros((3, 2, D), np.float32)], axis=1)  # the padded route
    other.append(wide, np.concatenate([full, np.zeros((3, 2), bool)], axis=1))
    got, mask = store.gather(np.arange(3))
    want, _ = other.gather(np.arange(3))
    assert mask.all() and np.array_equal(got, want) and np.array_equal(got, x)
    x[2, 4, 3] = np.inf
    with pytest.raises(InvalidInput, match=r"document 2 fragment 4 has NaN or inf"):
        store.append(x, full)
    store.close()
    other.close()
