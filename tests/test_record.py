"""`Encoded` validates and normalises once, at construction: what passes, what is refused."""

from __future__ import annotations

import numpy as np
import pytest

from isr.encoders.record import Encoded, Keywords
from isr.errors import InvalidInput

NONE4 = (Keywords.none(),) * 4


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    fast = rng.standard_normal((4, 6)).astype(np.float32)
    frags = rng.standard_normal((4, 5, 8)).astype(np.float32)
    mask = np.ones((4, 5), bool)
    mask[1, 3:] = False
    return fast, frags, mask


def test_unit_vectors_and_cleared_padding() -> None:
    fast, frags, mask = _batch()
    frags[1, 4] = np.nan  # padding may hold anything
    frags[2, 0] *= 1e25  # finite, but its squared norm overflows float32
    e = Encoded(fast.astype(np.float64), frags, mask, NONE4)
    assert e.fast.dtype == np.float32 and e.fragments.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e.fast, axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(e.fragments[mask], axis=1), 1, rtol=1e-6)
    assert (e.fragments[~mask] == 0).all()
    want = frags[2, 0] / np.linalg.norm(frags[2, 0].astype(np.float64))
    np.testing.assert_allclose(e.fragments[2, 0], want, rtol=1e-6)


@pytest.mark.parametrize(
    "where, value, message",
    [
        ("frag", np.nan, "fragments: item 3 has NaN or inf"),
        ("frag", np.inf, "fragments: item 3 has NaN or inf"),
        ("fast", -np.inf, "fast: item 2 has NaN or inf"),
        ("zero", 0.0, r"fragments: vector at index \[0, 2\] has zero norm"),
    ],
)
def test_bad_values_are_named(where: str, value: float, message: str) -> None:
    fast, frags, mask = _batch()
    if where == "frag":
        frags[3, 1, 2] = value
    elif where == "fast":
        fast[2, 1] = value
    else:
        frags[0, 2] = value
    with pytest.raises(InvalidInput, match=message):
        Encoded(fast, frags, mask, NONE4)
