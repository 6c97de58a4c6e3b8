"""A small deterministic text encoder for facade tests: it tests the facade, not a model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from isr.encoders.record import Encoded, Keywords


class FakeEncoder:
    """Each word gets a fixed random fragment; the fast vector is a fixed random projection of
    their mean; the keywords are the text's distinct words (best first = first seen)."""

    fingerprint = ""

    def __init__(self, d_fast: int, d_frag: int, max_frags: int = 8) -> None:
        self.d_fast, self.d_frag, self.max_frags = d_fast, d_frag, max_frags
        self.proj = np.random.default_rng(0).standard_normal((d_frag, d_fast)).astype(np.float32)
        self.calls = 0

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.d_frag).astype(np.float32)

    def encode_texts(self, texts: Sequence[str]) -> Encoded:
        self.calls += 1
        n = len(texts)
        frags = np.zeros((n, self.max_frags, self.d_frag), np.float32)
        mask = np.zeros((n, self.max_frags), bool)
        fast = np.zeros((n, self.d_fast), np.float32)
        kws = []
        for i, t in enumerate(texts):
            words = t.lower().split()[: self.max_frags]
            for j, w in enumerate(words):
                frags[i, j] = self._word(w)
                mask[i, j] = True
            fast[i] = frags[i, : len(words)].mean(axis=0) @ self.proj
            labels = tuple(dict.fromkeys(words))
            kws.append(Keywords(labels, tuple(0.9**k for k in range(1, len(labels) + 1))))
        return Encoded(fast, frags, mask, tuple(kws))
