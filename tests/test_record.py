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


def test_rows_already_unit_are_kept_as_they_are_and_others_normalised() -> None:
    # pre-encoded items arrive normalised: kept (no copy), while a row off unit norm, padding
    # that is not zeros, or another dtype still take the normalising pass
    rng = np.random.default_rng(4)
    fast = rng.standard_normal((3, 8)).astype(np.float32)
    fast /= np.linalg.norm(fast, axis=1, keepdims=True)
    frags = rng.standard_normal((3, 4, 6)).astype(np.float32)
    frags /= np.linalg.norm(frags, axis=2, keepdims=True)
    mask = np.ones((3, 4), bool)
    mask[2, 3] = False
    frags[2, 3] = 0.0
    e = Encoded(fast, frags, mask, (Keywords.none(),) * 3)
    assert e.fast is fast and e.fragments is frags  # unit already, padding zeros: as given
    off = fast.copy()
    off[1] *= 1.01
    junk = frags.copy()
    junk[2, 3] = 5.0  # padding with values
    e = Encoded(off, junk, mask, (Keywords.none(),) * 3)
    np.testing.assert_allclose(np.linalg.norm(e.fast, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(e.fast[1], fast[1], rtol=1e-6)
    assert not e.fragments[2, 3].any() and e.fragments is not junk
    assert np.allclose(e.fragments[:2], frags[:2])
    e = Encoded(fast.astype(np.float64), frags, mask, (Keywords.none(),) * 3)
    assert e.fast.dtype == np.float32 and np.allclose(e.fast, fast)


def test_keyword_checks_name_the_bad_label_or_probability() -> None:
    class Tag(str):
        pass

    assert Keywords((Tag("dog"), "cat"), (0.5, 0.4)).labels == ("dog", "cat")  # str subclass
    for labels, message in [(("dog", ""), "label '' is not"), (("dog", 3), "label 3 is not"),
                            (("dog", "dog"), "duplicate labels")]:  # fmt: skip
        with pytest.raises(InvalidInput, match=message):
            Keywords(labels, (0.5, 0.4))
    with pytest.raises(InvalidInput, match="probabilities must be finite"):
        Keywords(("dog", "cat"), (0.5, float("nan")))
