"""Fragment codecs: round-trip error bounds, torch decode == numpy decode, input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isr.errors import InvalidInput
from isr.plugin.store.codecs import CODECS, make_codec

D = 64


def unit_rows(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_code_sizes() -> None:
    assert {c: make_codec(c, D).code_size for c in CODECS} == {
        "fp32": 4 * D,
        "fp16": 2 * D,
        "sq8": D,
    }


@pytest.mark.parametrize("name", CODECS)
def test_encode_shape_and_dtype(name: str) -> None:
    c = make_codec(name, D)
    codes = c.encode(unit_rows(7))
    assert codes.dtype == np.uint8 and codes.shape == (7, c.code_size)
    assert c.decode(codes).dtype == np.float32 and c.decode(codes).shape == (7, D)
    # leading dimensions pass through: (C, n, d) <-> (C, n, code_size)
    x3 = unit_rows(12).reshape(3, 4, D)
    assert c.encode(x3).shape == (3, 4, c.code_size)
    np.testing.assert_array_equal(
        c.decode(c.encode(x3)), c.decode(c.encode(x3.reshape(12, D))).reshape(3, 4, D)
    )
    assert c.encode(np.empty((0, D), np.float32)).shape == (0, c.code_size)
    assert c.decode(np.empty((0, c.code_size), np.uint8)).shape == (0, D)


def test_fp32_is_lossless() -> None:
    c = make_codec("fp32", D)
    x = unit_rows(200) * 3.0  # not only unit values
    np.testing.assert_array_equal(c.decode(c.encode(x)), x)


def test_fp16_relative_error() -> None:
    c = make_codec("fp16", D)
    x = unit_rows(500, seed=1)
    err = np.abs(c.decode(c.encode(x)) - x)
    # half precision: 11 significant bits, plus the subnormal step for tiny components
    assert (err <= np.abs(x) * 2.0**-11 + 2.0**-25).all()
    big = np.abs(x) > 1e-3
    assert (err[big] / np.abs(x[big])).max() <= 1e-3


def test_sq8_absolute_and_dot_error() -> None:
    c = make_codec("sq8", D)
    x = unit_rows(500, seed=2)
    y = c.decode(c.encode(x))
    assert np.abs(y - x).max() <= 1 / 255 + 1e-6
    # a dot product with any vector q moves by at most |q|_1 * 1/255
    q = unit_rows(20, seed=3)
    dot_err = np.abs(q @ x.T - q @ y.T)  # (20, 500)
    assert (dot_err <= np.abs(q).sum(1)[:, None] * (1 / 255 + 1e-6)).all()
    # with random rounding errors the typical error is far below the worst case
    assert dot_err.mean() < 0.25 * np.sqrt(D) / 255


def test_sq8_range_is_fixed_and_clips() -> None:
    c = make_codec("sq8", 4)
    x = np.array([[-1.0, 1.0, 0.0, 0.5], [-7.0, 7.0, 2.0, -1e-9]], np.float32)
    y = c.decode(c.encode(x))
    assert np.abs(y[0] - x[0]).max() <= 1 / 255 + 1e-6
    assert y[0, 2] == 0.0  # zero (the padding value) decodes to exactly zero
    np.testing.assert_allclose(y[1, :3], [-1.0, 1.0, 1.0], atol=1 / 255 + 1e-6)  # clipped
    # no data dependence: a second codec yields the same codes
    np.testing.assert_array_equal(make_codec("sq8", 4).encode(x), c.encode(x))


@pytest.mark.parametrize("name", CODECS)
def test_zero_vectors_decode_to_zero(name: str) -> None:
    c = make_codec(name, D)
    z = np.zeros((3, D), np.float32)
    np.testing.assert_array_equal(c.decode(c.encode(z)), z)


@pytest.mark.parametrize("name", CODECS)
def test_decode_torch_matches_decode(name: str) -> None:
    c = make_codec(name, D)
    x = unit_rows(300, seed=4).reshape(30, 10, D)
    codes = c.encode(x)  # (30, 10, code_size)
    ref = c.decode(codes)
    got = c.decode_torch(torch.from_numpy(codes))
    assert got.dtype == torch.float32 and tuple(got.shape) == (30, 10, D)
    if name == "sq8":
        np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(got.numpy(), ref)
    if name == "sq8":  # every code value, not only those the data hit
        all_codes = np.repeat(np.arange(256, dtype=np.uint8), D).reshape(256, D)
        t = c.decode_torch(torch.from_numpy(all_codes)).numpy()
        np.testing.assert_allclose(t, c.decode(all_codes), rtol=0, atol=1e-6)


def test_make_codec_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match=r"'int4'.*\['fp32', 'fp16', 'sq8'\]"):
        make_codec("int4", D)
    for d in (0, -3, True, 2.5):
        with pytest.raises(InvalidInput, match="positive integer"):
            make_codec("fp16", d)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", CODECS)
def test_encode_decode_reject_wrong_shapes(name: str) -> None:
    c = make_codec(name, D)
    with pytest.raises(InvalidInput, match=f"dimension {D}"):
        c.encode(np.zeros((2, D + 1), np.float32))
    with pytest.raises(InvalidInput, match=f"width {c.code_size}"):
        c.decode(np.zeros((2, c.code_size + 1), np.uint8))
    with pytest.raises(InvalidInput, match="uint8"):
        c.decode(np.zeros((2, c.code_size), np.int32))
    with pytest.raises(InvalidInput, match="uint8"):
        c.decode_torch(torch.zeros((2, c.code_size), dtype=torch.float32))


@pytest.mark.parametrize("name", CODECS)
def test_decode_torch_into_buffer(name: str) -> None:
    c = make_codec(name, D)
    codes = torch.from_numpy(c.encode(unit_rows(40, seed=5).reshape(4, 10, D)))
    buf = torch.full((4, 10, D), 7.0)
    got = c.decode_torch(codes, out=buf)
    assert got.data_ptr() == buf.data_ptr()
    np.testing.assert_array_equal(got.numpy(), c.decode_torch(codes).numpy())
    with pytest.raises(InvalidInput, match=r"out must be float32 of shape \(4, 10, 64\)"):
        c.decode_torch(codes, out=torch.empty(4, 9, D))
    with pytest.raises(InvalidInput, match="out must be float32"):
        c.decode_torch(codes, out=torch.empty(4, 10, D, dtype=torch.float64))
