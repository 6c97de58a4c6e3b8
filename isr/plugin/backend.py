"""What a search backend hands the isr pipeline, and what the pipeline asks of it.

Entry point: :class:`SearchBackend`, the protocol :func:`isr.plugin.pipeline.search` runs on.
:class:`isr.plugin.embedded.index.EmbeddedIndex` and :class:`isr.plugin.es.backend.EsBackend` implement it.
A backend runs the screening stages itself (user filter, keyword filter, kNN on the fast
vector), because where they run differs: the embedded index intersects roaring bitmaps before
a FAISS search, Elasticsearch runs all three in one request. It returns :class:`Candidates`
keyed by integers of its own choosing (rows of the fragment store); the pipeline then reranks
them with max-sim (unless the backend already did, as Elasticsearch does with `rank_vectors`)
and asks the backend to fetch the survivors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from isr.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    from isr.encoders.record import Encoded
    from isr.plugin.config import IndexConfig
    from isr.plugin.pipeline import SearchOptions
    from isr.plugin.store.maxsim import MaxSimScorer

__all__ = [
    "KNN_METHODS",
    "MAX_ID_BYTES",
    "MODES",
    "Candidates",
    "FetchedDoc",
    "SearchBackend",
    "Stage",
    "StageTimer",
    "TextEncoder",
    "check_encoder",
    "check_ids",
    "id_problem",
    "relax_reason",
]

MODES = ("any", "all", "minimum_should_match")  # how query keywords combine in the screen
# The embedded index's kNN methods (isr.plugin.embedded.fast_index plans among them and
# implements each; SearchOptions.knn_method forces one): named here, once, where both the
# options and the embedded backend read them without importing each other.
KNN_METHODS = ("gather", "exact", "compressed", "hnsw")

# One rule for document ids in every backend and in the loader: a non-empty string of at most
# 512 bytes in UTF-8, Elasticsearch's limit on `_id` (bytes, not characters: an id that fits
# the embedded index must fit Elasticsearch too, so a gallery can move between them).
MAX_ID_BYTES = 512


def id_problem(doc_id: object) -> str:
    """Why `doc_id` cannot be a document id ("" when it can)."""
    if not isinstance(doc_id, str) or not doc_id:
        return f"document ids are non-empty strings, got {doc_id!r}"[:200]
    if len(doc_id.encode()) > MAX_ID_BYTES:
        return f"id longer than {MAX_ID_BYTES} bytes (UTF-8), got {len(doc_id.encode())}"
    return ""


def check_ids(ids: Sequence[str], n: int) -> list[str]:
    """The ids of a batch of n items as a list; refuses a bad id or a duplicate, naming it."""
    if isinstance(ids, str):
        raise InvalidInput("ids: expected a sequence of strings, got one string")
    out = list(ids)
    if len(out) != n:
        raise InvalidInput(f"ids: {len(out)} ids for {n} items")
    seen: set[str] = set()
    for i, doc_id in enumerate(out):
        why = id_problem(doc_id)
        if why:
            raise InvalidInput(f"ids[{i}]: {why}")
        if doc_id in seen:
            raise InvalidInput(f"ids[{i}]: duplicate id {doc_id!r} within the batch")
        seen.add(doc_id)
    return out


@dataclass(frozen=True)
class Stage:
    name: str  # "filter", "keywords", "knn", "rerank", "fetch"
    ms: float
    count: int  # documents admitted (filter, keywords), candidates (knn), scored (rerank)
    detail: str = ""


@dataclass(frozen=True)
class Candidates:
    """The screening stages' output.

    keys: (C,) int64 backend keys, best first by fast score when kNN ran; None means every
    document (no kNN, nothing screened out). fast: (C,) float32 fast scores aligned with keys,
    None without kNN. maxsim: (C,) float32 when the backend already reranked, keys then being
    in final order. total: documents admitted by every filter; gallery: live documents.
    context: backend-private state that `fetch` reads back (Elasticsearch: the hits).
    """

    keys: np.ndarray | None
    fast: np.ndarray | None
    total: int
    gallery: int
    stages: tuple[Stage, ...]
    relaxed: bool = False
    relax_reason: str = ""
    maxsim: np.ndarray | None = None
    context: Any = None


@dataclass(frozen=True)
class FetchedDoc:
    id: str
    source: dict[str, Any] | None
    labels: tuple[str, ...]  # the document's stored keyword labels


class SearchBackend(Protocol):
    """The stages of one search that depend on where the index lives."""

    @property
    def config(self) -> IndexConfig: ...

    @property
    def scorer(self) -> MaxSimScorer: ...

    def candidates(self, query: Encoded, labels: tuple[str, ...], opt: SearchOptions) -> Candidates:
        """Run the filter, keyword and kNN stages for a query (an Encoded batch of one) whose
        screen uses `labels`; a backend that reranks itself also uses its fragments."""
        ...

    def score_keys(self, q: np.ndarray, q_mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """Max-sim (C,) float32 of the query's fragments q (nq, d), q_mask (nq,) against the
        stored fragments of keys (C,), in key order (the rerank of kNN candidates)."""
        ...

    def exhaustive(
        self, q: np.ndarray, q_mask: np.ndarray, k: int, keys: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k keys (of `keys`, or of every document) by max-sim: (scores (k',), keys (k',))."""
        ...

    def fetch(self, cands: Candidates, keys: np.ndarray, with_source: bool) -> list[FetchedDoc]:
        """Id, `_source` and keyword labels of each key, in order."""
        ...

    def fast_scores_of(self, q_fast: np.ndarray, cands: Candidates, keys: np.ndarray) -> np.ndarray:
        """Fast scores (C,) of keys that the kNN stage did not score (exhaustive rerank)."""
        ...

    def label_shares(self, labels: Sequence[str], r_i: int | None = None) -> dict[str, float]:
        """Share of the gallery storing each label among its top ``r_i`` (None: every stored
        label), i.e. what a screen on that label alone admits; labels no document stores are
        absent. The keyword "cost" rule and stop labels use it
        (:class:`isr.plugin.pipeline.KeywordOptions`)."""
        ...


class StageTimer:
    """Times the consecutive stages of one search: :meth:`done` closes the stage that began at
    the previous mark (the timer's start, or the last `done`) and records it."""

    def __init__(self, stages: Sequence[Stage] = ()) -> None:
        self.stages: list[Stage] = list(stages)
        self.mark = time.perf_counter()

    def done(self, name: str, count: int, detail: str = "") -> float:
        """Record stage `name` (count: what it admitted or scored); returns the new mark."""
        now = time.perf_counter()
        self.stages.append(Stage(name, (now - self.mark) * 1e3, count, detail))
        self.mark = now
        return now


class TextEncoder(Protocol):
    """What the engine needs of a text model (the app hands one in; an
    :class:`isr.encoders.bundle.Bundle` is one): encode a batch of texts, and say which bundle it
    is, so a query is never encoded by a model other than the one that filled the index."""

    @property
    def fingerprint(self) -> str:
        """The bundle's fingerprint ("" when unknown: then nothing is checked)."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> Encoded: ...


def check_encoder(encoder: TextEncoder, config: IndexConfig, index: str) -> None:
    """Refuse an encoder whose bundle is not the one the index was filled with."""
    have, want = encoder.fingerprint, config.bundle_fingerprint
    if have and want and have != want:
        raise Conflict(
            f"index [{index}] was filled with encoder bundle {want[:12]}..., the text encoder "
            f"is bundle {have[:12]}...; use the index's own bundle"
        )


def relax_reason(labels: Sequence[str], admitted: int | None, size: int) -> str:
    """Why the keyword screen is dropped for this query ("" when it is kept): the one rule of
    every backend.

    A query without keywords has no screen. A screen that admits fewer documents than asked
    for (admitted; None: not counted) would return a short page; the pipeline then searches
    the documents the user's filter admits instead, and says so.
    """
    if not labels:
        return "the query has no keywords"
    if admitted is not None and admitted < size:
        return f"keyword filter admitted {admitted} < size {size} documents"
    return ""
