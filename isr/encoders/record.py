"""The typed record every encoder produces and every backend consumes.

Entry point: :class:`Encoded`, a batch of B encoded items (images or texts).
The engine (``isr.plugin``) depends on the encoders only through this record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from isr.errors import InvalidInput

__all__ = ["Encoded", "Keywords"]


@dataclass(frozen=True)
class Keywords:
    """Ranked keyword labels of one item, best first, with their probabilities; for a text,
    ``extracted`` holds the vocabulary labels its own words name (in vocabulary order)."""

    labels: tuple[str, ...]
    probs: tuple[float, ...]
    extracted: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.probs):
            raise InvalidInput(
                f"keywords: {len(self.labels)} labels but {len(self.probs)} probabilities"
            )
        # C-level passes (map, set): one item's check is on the loader's path per document
        if not set(map(type, self.labels)) <= {str} or "" in self.labels:
            for label in self.labels:  # (a str subclass passes here, as it always did)
                if not isinstance(label, str) or not label:
                    raise InvalidInput(f"keywords: label {label!r} is not a non-empty string")
        if len(set(self.labels)) != len(self.labels):
            raise InvalidInput(f"keywords: duplicate labels in {self.labels}")
        if not all(map(math.isfinite, self.probs)):
            raise InvalidInput(f"keywords: probabilities must be finite, got {self.probs}")

    def top(self, r: int) -> tuple[str, ...]:
        return self.labels[:r]

    @classmethod
    def none(cls) -> Keywords:
        return cls((), ())


def squared_norms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x (..., d) float32 -> squared norms (...,) and whether each vector is finite (...,).

    One einsum pass, no temporary of x's size. A NaN or inf value makes its squared norm
    non-finite; so does a finite vector large enough to overflow float32: the vectors so
    flagged are checked exactly, and the finite ones re-measured in float64.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.einsum("...d,...d->...", x, x)  # (...,)
    finite = np.isfinite(sq)
    flagged = ~finite
    if flagged.any():
        finite[flagged] = np.isfinite(x[flagged]).all(axis=-1)
        big = flagged & finite
        if big.any():
            x64 = x[big].astype(np.float64)
            sq = sq.astype(np.float64)
            sq[big] = np.einsum("...d,...d->...", x64, x64)
    return sq, finite


UNIT_TOL = 1e-5  # |norm^2 - 1| of a row taken as already unit (float32 rounding: ~1e-7)


def _l2_normalise(x: np.ndarray, what: str, valid: np.ndarray | None = None) -> np.ndarray:
    """x (..., d) -> float32 unit vectors; rows where ``valid`` is False become zeros.

    One pass for the squared norms (:func:`squared_norms`) and one for the result. Rows with
    NaN or inf values are refused. A float32 array whose rows are unit already (within
    :data:`UNIT_TOL`, padding rows all zeros) is returned as it is, not copied: pre-encoded
    items arrive normalised, and the copy and its check were ~36 us of the loader's ~200 us
    of CPU per 32 x 256-d item (BENCHMARKS.md, issue 16, session 4).
    """
    x32 = x if x.dtype == np.float32 else x.astype(np.float32)
    sq, finite = squared_norms(x32)
    bad = ~finite if valid is None else ~finite & valid
    if bad.any():
        where = np.argwhere(bad)[0].tolist()
        raise InvalidInput(f"{what}: item {where[0]} has NaN or inf values")
    zero = sq == 0 if valid is None else (sq == 0) & valid
    if zero.any():
        where = np.argwhere(zero)[0].tolist()
        raise InvalidInput(f"{what}: vector at index {where} has zero norm")
    unit = np.abs(sq - 1.0) <= UNIT_TOL
    if valid is None:
        if unit.all():
            return x32
    elif (unit | ~valid).all() and not x32[~valid].any():
        return x32
    with np.errstate(divide="ignore"):
        inv = 1.0 / np.sqrt(sq)
    if valid is not None:
        inv = np.where(valid, inv, 0.0)  # padding slots: zeros (also any NaN/inf they held)
    out = x32 * inv[..., None].astype(np.float32)
    if valid is not None and not np.isfinite(out).all():
        out[~valid] = 0.0  # NaN * 0 is NaN: padding that held NaN/inf is cleared outright
    return out


@dataclass(frozen=True)
class Encoded:
    """B encoded items.

    fast:      (B, d_fast) float32, L2-normalised single vector (the fast model F).
    fragments: (B, n, d) float32, L2-normalised fragments (the base model B).
    mask:      (B, n) bool, True where a fragment is real.
    keywords:  B ranked keyword lists (labels + probabilities).

    Construction validates shapes and values (finite, non-zero norms, at least one
    fragment per item) and L2-normalises vectors, so a backend can trust it. A float32
    array that is unit already is held as given, not copied (do not write to it after).
    """

    fast: np.ndarray
    fragments: np.ndarray
    mask: np.ndarray
    keywords: tuple[Keywords, ...]

    def __post_init__(self) -> None:
        fast = np.asarray(self.fast)
        frags = np.asarray(self.fragments)
        mask = np.asarray(self.mask)
        if fast.ndim != 2:
            raise InvalidInput(f"fast: expected shape (B, d_fast), got {fast.shape}")
        if frags.ndim != 3:
            raise InvalidInput(f"fragments: expected shape (B, n, d), got {frags.shape}")
        b = fast.shape[0]
        if frags.shape[0] != b:
            raise InvalidInput(f"fragments: batch size {frags.shape[0]} != fast batch size {b}")
        if mask.shape != frags.shape[:2]:
            raise InvalidInput(f"mask: expected shape {frags.shape[:2]}, got {mask.shape}")
        if len(self.keywords) != b:
            raise InvalidInput(f"keywords: {len(self.keywords)} lists for a batch of {b}")
        if fast.shape[1] == 0 or frags.shape[1] == 0 or frags.shape[2] == 0:
            raise InvalidInput(f"empty dimension in fast {fast.shape} or fragments {frags.shape}")
        mask = mask.astype(bool)
        if b and not mask.any(axis=1).all():
            i = int(np.argmin(mask.any(axis=1)))
            raise InvalidInput(f"mask: item {i} has no fragments")
        object.__setattr__(self, "fast", _l2_normalise(fast, "fast"))
        object.__setattr__(self, "fragments", _l2_normalise(frags, "fragments", mask))
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "keywords", tuple(self.keywords))

    def __len__(self) -> int:
        return int(self.fast.shape[0])

    def __getitem__(self, i: int | slice) -> Encoded:
        sl = slice(i, i + 1) if isinstance(i, int) else i
        kw = self.keywords[sl]
        return Encoded(self.fast[sl], self.fragments[sl], self.mask[sl], kw)

    @property
    def d_fast(self) -> int:
        return int(self.fast.shape[1])

    @property
    def d_frag(self) -> int:
        return int(self.fragments.shape[2])

    @property
    def n_frags(self) -> int:
        return int(self.fragments.shape[1])

    @classmethod
    def concat(cls, parts: list[Encoded]) -> Encoded:
        if not parts:
            raise InvalidInput("concat: no parts")
        n = max(p.n_frags for p in parts)

        def pad(x: np.ndarray, value: float | bool) -> np.ndarray:
            widths = [(0, 0), (0, n - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
            return np.pad(x, widths, constant_values=value)

        return cls(
            np.concatenate([p.fast for p in parts]),
            np.concatenate([pad(p.fragments, 0.0) for p in parts]),
            np.concatenate([pad(p.mask, False) for p in parts]),
            tuple(k for p in parts for k in p.keywords),
        )
