"""A seeded synthetic *encoded* gallery: items and queries as an encoder bundle would emit them.

Entry points: :func:`encoded_gallery` (batches of ids + :class:`Encoded` items) and
:func:`encoded_queries` (queries with their ground-truth document). It lets the engine be
tested and benchmarked without a trained model, with the structure the pipeline relies on:

- L latent concepts with Zipf-like popularity; each document shows 2-5 of them.
- Fragments: each of the document's n fragments is one of its concepts' prototypes plus a
  strong document-specific perturbation, so documents that share concepts still differ.
- The fast vector is a lossy single-vector summary (concept mean + document signature), so it
  ranks less sharply than max-sim over fragments, as the fast model does in the paper.
- Keywords: a document's concepts first, then distractor labels with falling probabilities
  (R_I per document); a query's keywords are its document's concepts, with a chance that
  one of them is replaced by a wrong label, so the screen sometimes misses.
- A query for document i sees a noisy subset of i's fragments (a caption names part of a
  scene) and a noisy copy of its fast vector.

Documents are generated in fixed blocks of 1,024 from `rng([seed, block])`, so any document
(and any query) is reproducible on its own, whatever batch size the caller streams with.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isr.encoders.record import Encoded, Keywords
from isr.errors import NotFound
from isr.ingest.encoded_source import EncodedSource, SourceOf, fill_index
from isr.plugin import EmbeddedIndex, EsBackend, IndexConfig

__all__ = [
    "EncodedWorld",
    "build_encoded_index",
    "demo_source",
    "encoded_gallery",
    "encoded_queries",
    "load_encoded_world",
    "world_source",
]

BLOCK = 1024


@dataclass(frozen=True)
class EncodedWorld:
    n_docs: int
    n_labels: int = 500
    d_fast: int = 256
    d_frag: int = 128
    n_frags: int = 32
    r_i: int = 15
    seed: int = 0
    doc_noise: float = 0.9  # document-specific share of each fragment
    query_noise: float = 3.0  # noise added to the query's fast vector (relative to its signal)
    query_frag_noise: float = 6.0  # noise added to each of the query's fragments
    query_frags: int = 12  # fragments a query keeps (a caption covers part of a scene)
    keyword_error: float = 0.05  # chance a query keyword is replaced by a wrong one

    def label(self, c: int) -> str:
        return f"concept{c:04d}"

    def prototypes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 2**31])
        p_frag = rng.standard_normal((self.n_labels, self.d_frag)).astype(np.float32)
        p_fast = rng.standard_normal((self.n_labels, self.d_fast)).astype(np.float32)
        pop = 1.0 / np.arange(1, self.n_labels + 1) ** 0.8
        return p_frag, p_fast, (pop / pop.sum())

    def block(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Documents of block b: concepts (n, 5; -1 pad), fragments (n, F, d), fast (n, d_fast), distractors (n, R_I)."""
        p_frag, p_fast, pop = self.prototypes()
        n = min(BLOCK, self.n_docs - b * BLOCK)
        rng = np.random.default_rng([self.seed, b])
        k = rng.integers(2, 6, size=n)
        concepts = np.full((n, 5), -1, dtype=np.int64)
        for i in range(n):
            concepts[i, : k[i]] = rng.choice(self.n_labels, size=k[i], replace=False, p=pop)
        which = concepts[np.arange(n)[:, None], np.arange(self.n_frags)[None, :] % k[:, None]]
        frags = p_frag[which] / np.sqrt(self.d_frag)  # (n, F, d)
        frags = frags + self.doc_noise * rng.standard_normal(frags.shape).astype(
            np.float32
        ) / np.sqrt(self.d_frag)
        valid = concepts >= 0
        mean = (p_fast[np.where(valid, concepts, 0)] * valid[..., None]).sum(1) / k[:, None]
        signature = rng.standard_normal((n, self.d_fast)).astype(np.float32)
        fast = mean / np.sqrt(self.d_fast) + 0.6 * signature / np.sqrt(self.d_fast)
        distract = rng.choice(self.n_labels, size=(n, self.r_i))  # uniform: noise, not popularity
        return concepts, frags.astype(np.float32), fast.astype(np.float32), distract

    def doc_id(self, i: int) -> str:
        return f"doc-{i:07d}"


def _doc_keywords(world: EncodedWorld, concepts: np.ndarray, distract: np.ndarray) -> Keywords:
    labels: list[str] = []
    for c in list(concepts[concepts >= 0]) + list(distract):
        name = world.label(int(c))
        if name not in labels:
            labels.append(name)
    labels = labels[: world.r_i]
    probs = tuple(float(0.95 ** (j + 1)) for j in range(len(labels)))
    return Keywords(tuple(labels), probs)


def encoded_gallery(
    world: EncodedWorld, batch_size: int = 1024
) -> Iterator[tuple[list[str], Encoded]]:
    """Yield (ids, items) batches covering documents 0..n_docs-1 in order."""
    mask = np.ones((batch_size, world.n_frags), dtype=bool)
    buf: list[tuple[str, np.ndarray, np.ndarray, Keywords]] = []
    for b in range((world.n_docs + BLOCK - 1) // BLOCK):
        concepts, frags, fast, distract = world.block(b)
        for i in range(concepts.shape[0]):
            kw = _doc_keywords(world, concepts[i], distract[i])
            buf.append((world.doc_id(b * BLOCK + i), frags[i], fast[i], kw))
            if len(buf) == batch_size:
                yield _batch(buf, mask)
                buf = []
    if buf:
        yield _batch(buf, mask[: len(buf)])


def _batch(
    buf: list[tuple[str, np.ndarray, np.ndarray, Keywords]], mask: np.ndarray
) -> tuple[list[str], Encoded]:
    ids = [b[0] for b in buf]
    frags = np.stack([b[1] for b in buf])
    fast = np.stack([b[2] for b in buf])
    return ids, Encoded(fast, frags, mask[: len(buf)], tuple(b[3] for b in buf))


def encoded_queries(
    world: EncodedWorld, n_queries: int, seed: int = 1
) -> tuple[Encoded, list[str]]:
    """n_queries queries (one per distinct random document) and the id each should find."""
    rng = np.random.default_rng([world.seed, seed, 7])
    targets = np.sort(rng.choice(world.n_docs, size=min(n_queries, world.n_docs), replace=False))
    _, _, pop = world.prototypes()
    fasts, fragss, kws = [], [], []
    cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for t in targets:
        b, i = divmod(int(t), BLOCK)
        if b not in cache:
            cache = {b: world.block(b)}
        concepts, frags, fast, _ = cache[b]
        nq = min(world.query_frags, world.n_frags)
        keep = rng.choice(world.n_frags, size=nq, replace=False)
        qf = frags[i, keep] + world.query_frag_noise * rng.standard_normal(
            (nq, world.d_frag)
        ).astype(np.float32) / np.sqrt(world.d_frag)
        qv = fast[i] + world.query_noise * rng.standard_normal(world.d_fast).astype(
            np.float32
        ) / np.sqrt(world.d_fast)
        own = [int(c) for c in rng.permutation(concepts[i][concepts[i] >= 0])]
        labels: list[str] = []
        for c in own:
            if rng.random() < world.keyword_error:
                c = int(rng.choice(world.n_labels, p=pop))
            if world.label(c) not in labels:
                labels.append(world.label(c))
        probs = tuple(float(0.9 ** (j + 1)) for j in range(len(labels)))
        fasts.append(qv)
        fragss.append(qf)
        kws.append(Keywords(tuple(labels), probs))
    mask = np.ones((len(targets), min(world.query_frags, world.n_frags)), dtype=bool)
    q = Encoded(np.stack(fasts), np.stack(fragss), mask, tuple(kws))
    return q, [world.doc_id(int(t)) for t in targets]


LICENSES = ("cc-by", "cc0", "cc-by-nc")


def demo_source(i: int) -> dict[str, object]:
    """The `_source` of synthetic document i: fields for filter demos and tests."""
    return {"license": LICENSES[i % 3], "year": 2000 + i % 25}


def world_source(world: EncodedWorld, source_of: SourceOf | None = demo_source) -> EncodedSource:
    """The world's documents as a gallery source, document i with `_source` source_of(i)."""
    describe = {"kind": "encoded-world", "n": world.n_docs, "seed": world.seed}

    def batches(size: int) -> Iterator[tuple[list[str], Encoded]]:
        return encoded_gallery(world, size)

    return EncodedSource(batches, world.n_docs, describe, "image", source_of)


def build_encoded_index(
    path: Path, world: EncodedWorld, config: IndexConfig, batch: int = 2048
) -> EmbeddedIndex:
    """Create and fill an index with the world's documents, or reopen a complete one."""
    try:
        index = EmbeddedIndex.open(path, expect=config)
        if len(index) == world.n_docs:
            return index
        index.close()
        EmbeddedIndex.destroy(path)
    except NotFound:
        pass
    index = EmbeddedIndex.create(path, config)
    fill_index(index, world_source(world), batch, progress=True)
    return index


def load_encoded_world(
    backend: EsBackend, n_docs: int, seed: int = 0, batch: int = 1000, **world: Any
) -> int:
    """Fill an Elasticsearch `backend` with the seeded synthetic encoded gallery (sources:
    license, year), as `isr demo` fills the embedded index. Returns the documents sent."""
    c = backend.config
    w = EncodedWorld(
        n_docs=n_docs, d_fast=c.d_fast, d_frag=c.d_frag, n_frags=c.max_frags, seed=seed, **world
    )
    report = fill_index(backend, world_source(w), batch, commit_every=10 * batch)
    return report.added + report.replaced
