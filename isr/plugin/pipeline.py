"""The isr search pipeline: keyword pre-filter -> kNN on the fast vector -> max-sim rerank.

Entry point: :func:`search(backend, query, options) -> SearchResult`. `SearchOptions` holds every
knob and validates itself when built; its stage switches give the ablations (see ABLATIONS):
fast only, keywords + fast, the full pipeline, fast + rerank, exhaustive max-sim, and
keywords + exhaustive max-sim. Hits and the profile are small frozen records. The backend
(embedded index or Elasticsearch, see :mod:`isr.plugin.backend`) runs the screening stages;
the rerank, the fetch and the records are the same for both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from isr.encoders.record import Encoded, Keywords
from isr.errors import InvalidInput
from isr.plugin.backend import MODES, SearchBackend, Stage, StageTimer
from isr.plugin.filters import Filter, parse_filter
from isr.plugin.keyword_rule import select_labels

__all__ = [
    "ABLATIONS",
    "RULES",
    "TEXT_MODES",
    "Hit",
    "KeywordOptions",
    "Profile",
    "SearchOptions",
    "SearchResult",
    "Stage",
    "search",
]

MAX_K = 10_000  # Elasticsearch's own bound on k, num_candidates and size
KNN_METHODS = ("gather", "exact", "hnsw")  # the embedded kNN methods (fast_index.METHODS)
ES_EXACT_THRESHOLD = 20_000  # Elasticsearch: exact script_score up to this many admitted

# name -> (use_keywords, use_knn, use_rerank)
ABLATIONS: dict[str, tuple[bool, bool, bool]] = {
    "fast": (False, True, False),
    "keywords+fast": (True, True, False),
    "full": (True, True, True),
    "fast+rerank": (False, True, True),
    "exhaustive": (False, False, True),
    "keywords+exhaustive": (True, False, True),
}


def _int_in(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


TEXT_MODES = ("pred", "ext", "merge")
RULES = ("top", "cost")


@dataclass(frozen=True)
class KeywordOptions:
    """Which of the query's labels screen the gallery, and against how many stored labels.

    text: where a text query's labels come from (Cao et al.'s Table III): "pred", the text
    head's ranking (the paper's default); "ext", the nouns of the query mapped into the
    vocabulary; "merge", those first, then the predicted ones. An image query, and a text
    naming no vocabulary label, use the predicted labels.
    rule: "top", the first r_t (the paper's R_T); "cost", at most r_t ranked by
    log p - alpha * log(share of the gallery storing the label), leaving out labels below
    p_min and stop labels (stored by more than `stop` of the gallery), stopping once the kept
    labels hold `mass` of the query's probability (see :mod:`isr.plugin.keyword_rule`).
    r_i: how many of each document's stored labels count (None: all the index stores); any
    value up to the stored R_I works without re-indexing.
    mode / minimum_should_match: how the kept labels combine (any, all, at least m).
    """

    r_t: int = 3
    mode: str = "any"
    minimum_should_match: int = 1
    text: str = "pred"
    rule: str = "top"
    alpha: float = 0.0
    p_min: float = 0.0
    mass: float = 1.0
    stop: float = 1.0
    r_i: int | None = None

    def __post_init__(self) -> None:
        _int_in("keywords.r_t", self.r_t, 1, 100)
        if self.mode not in MODES:
            raise InvalidInput(f"keywords.mode {self.mode!r} is not one of {MODES}")
        _int_in("keywords.minimum_should_match", self.minimum_should_match, 1, self.r_t)
        if self.text not in TEXT_MODES:
            raise InvalidInput(f"keywords.text {self.text!r} is not one of {TEXT_MODES}")
        if self.rule not in RULES:
            raise InvalidInput(f"keywords.rule {self.rule!r} is not one of {RULES}")
        for name, lo, hi in (("alpha", 0.0, 10.0), ("p_min", 0.0, 1.0), ("mass", 0.0, 1.0),
                             ("stop", 0.0, 1.0)):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise InvalidInput(f"keywords.{name} must be a number in [{lo}, {hi}], got {v!r}")
        if self.mass <= 0:
            raise InvalidInput("keywords.mass must be > 0")
        if self.r_i is not None:
            _int_in("keywords.r_i", self.r_i, 1, 10_000)

    def select(self, kw: Keywords, backend: Any = None) -> tuple[str, ...]:
        """The labels of one query's keywords that screen (see the class doc)."""
        labels, probs = kw.labels, kw.probs
        if kw.extracted:  # a text naming vocabulary labels (else: an image, or no such noun)
            if self.text == "ext":
                labels, probs = kw.extracted, (1.0,) * len(kw.extracted)
            elif self.text == "merge":
                rest = [(w, p) for w, p in zip(labels, probs) if w not in set(kw.extracted)]
                labels = kw.extracted + tuple(w for w, _ in rest)
                probs = (1.0,) * len(kw.extracted) + tuple(p for _, p in rest)
        if self.rule == "top" and self.p_min == 0 and self.mass >= 1:
            return tuple(labels[: self.r_t])
        shares = None
        if self.rule == "cost" or self.stop < 1:
            if backend is None or not hasattr(backend, "label_shares"):
                raise InvalidInput(
                    "keywords.rule 'cost' and keywords.stop need the labels' document "
                    "frequencies, which this backend does not give; use rule 'top'"
                )
            shares = backend.label_shares(labels, self.r_i)
        alpha = self.alpha if self.rule == "cost" else 0.0
        return select_labels(labels, probs, self.r_t, shares=shares, alpha=alpha,
                             p_min=self.p_min, mass=self.mass, stop=self.stop)  # fmt: skip


@dataclass(frozen=True)
class SearchOptions:
    """Options of one search. `filter` is Elasticsearch query DSL (term, terms, range, bool).

    The kNN stage returns k = rerank_window candidates (size without rerank) from an HNSW
    search with ef = num_candidates, like Elasticsearch's knn (k, num_candidates); the rerank
    scores them with max-sim and keeps `size`. Without kNN the rerank is exhaustive over every
    admitted document. The kNN method is planned per query from the admitted count by a cost
    model measured on the machine (embedded: :meth:`FastIndex.plan`); exact_threshold, when
    given, replaces the plan by the older fixed rule (a filter admitting at most this many
    documents is searched exactly, a wider one through HNSW; Elasticsearch, which has no
    cost model, uses ES_EXACT_THRESHOLD when it is None); knn_method forces one of the
    embedded methods ("gather", "exact", "hnsw").
    """

    size: int = 10
    num_candidates: int = 1000
    rerank_window: int = 200
    keywords: KeywordOptions = field(default_factory=KeywordOptions)
    use_keywords: bool = True
    use_knn: bool = True
    use_rerank: bool = True
    filter: Any = None
    exact_threshold: int | None = None
    knn_method: str | None = None
    with_source: bool = True

    def __post_init__(self) -> None:
        _int_in("size", self.size, 1, MAX_K)
        _int_in("rerank_window", self.rerank_window, 1, MAX_K)
        _int_in("num_candidates", self.num_candidates, 1, MAX_K)
        if self.exact_threshold is not None:
            _int_in("exact_threshold", self.exact_threshold, 0, 10_000_000)
        if self.knn_method not in (None, *KNN_METHODS):
            raise InvalidInput(
                f"knn_method {self.knn_method!r} is not one of {list(KNN_METHODS)} (or null)"
            )
        if not (self.use_knn or self.use_rerank):
            raise InvalidInput("stages: at least one of knn and rerank must run")
        if self.use_knn and self.use_rerank and self.rerank_window < self.size:
            raise InvalidInput(
                f"rerank_window ({self.rerank_window}) must be >= size ({self.size})"
            )
        if self.use_knn and self.num_candidates < self.k:
            raise InvalidInput(
                f"num_candidates ({self.num_candidates}) must be >= k ({self.k}: "
                f"{'rerank_window' if self.use_rerank else 'size'})"
            )
        object.__setattr__(self, "_filter_tree", parse_filter(self.filter))

    @property
    def k(self) -> int:
        """How many candidates the kNN stage returns."""
        return self.rerank_window if self.use_rerank else self.size

    @property
    def filter_tree(self) -> Filter | None:
        tree: Filter | None = self.__dict__["_filter_tree"]
        return tree

    @property
    def ablation(self) -> str:
        flags = (self.use_keywords, self.use_knn, self.use_rerank)
        return next(n for n, f in ABLATIONS.items() if f == flags)

    @classmethod
    def for_ablation(cls, name: str, **kwargs: Any) -> SearchOptions:
        if name not in ABLATIONS:
            raise InvalidInput(f"unknown ablation {name!r}; one of {list(ABLATIONS)}")
        kw, knn, rerank = ABLATIONS[name]
        return cls(use_keywords=kw, use_knn=knn, use_rerank=rerank, **kwargs)

    def with_(self, **changes: Any) -> SearchOptions:
        return replace(self, **changes)


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    fast_score: float
    maxsim_score: float | None
    keywords_matched: tuple[str, ...]
    source: dict[str, Any] | None


@dataclass(frozen=True)
class Profile:
    stages: tuple[Stage, ...]
    took_ms: float
    gallery: int
    query_keywords: tuple[str, ...]
    relaxed: bool
    relax_reason: str

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)


@dataclass(frozen=True)
class SearchResult:
    hits: tuple[Hit, ...]
    total: int  # documents that passed every filter (the candidate pool)
    profile: Profile


def search(
    backend: SearchBackend, query: Encoded, options: SearchOptions | None = None
) -> SearchResult:
    """Run the isr pipeline for one encoded query (a batch of one)."""
    opt = options or SearchOptions()
    if not isinstance(query, Encoded) or len(query) != 1:
        raise InvalidInput("query: expected an Encoded batch of exactly one item")
    c = backend.config
    if query.d_fast != c.d_fast:
        raise InvalidInput(f"query fast vector has {query.d_fast} dims, the index has {c.d_fast}")
    if query.d_frag != c.d_frag:
        raise InvalidInput(f"query fragments have {query.d_frag} dims, the index has {c.d_frag}")
    q_fast, q_frags, q_mask = query.fast[0], query.fragments[0], query.mask[0]
    t_start = time.perf_counter()
    labels = opt.keywords.select(query.keywords[0], backend) if opt.use_keywords else ()
    cands = backend.candidates(query, labels, opt)
    timer = StageTimer(cands.stages)
    keys = cands.keys
    fast_of: dict[int, float] = {}
    if cands.fast is not None:
        assert keys is not None
        fast_of = dict(zip(keys.tolist(), cands.fast.tolist()))
    maxsim_of: dict[int, float] = {}
    if opt.use_rerank:
        if cands.maxsim is not None:  # the backend reranked (Elasticsearch rank_vectors)
            assert keys is not None
            scores = cands.maxsim
        elif opt.use_knn:
            assert keys is not None
            ms = backend.score_keys(q_frags, q_mask, keys)
            top = np.argsort(-ms, kind="stable")[: opt.size]
            keys, scores = keys[top], ms[top]
            timer.done("rerank", int(ms.shape[0]))
        else:
            scores, keys = backend.exhaustive(q_frags, q_mask, opt.size, keys)
            timer.done("rerank", cands.total, "exhaustive")
        maxsim_of = dict(zip(keys.tolist(), scores.tolist()))
    assert keys is not None
    keys = keys[: opt.size]

    docs = backend.fetch(cands, keys, opt.with_source)
    missing = [k for k in keys.tolist() if k not in fast_of]
    if missing:
        got = backend.fast_scores_of(q_fast, cands, np.array(missing, dtype=np.int64))
        fast_of.update(zip(missing, got.tolist()))
    used = set(labels)
    hits = []
    for key, doc in zip(keys.tolist(), docs):
        ms_score = maxsim_of.get(key)
        hits.append(
            Hit(
                id=doc.id,
                score=float(ms_score if ms_score is not None else fast_of[key]),
                fast_score=float(fast_of[key]),
                maxsim_score=None if ms_score is None else float(ms_score),
                keywords_matched=tuple(x for x in doc.labels if x in used),
                source=doc.source,
            )
        )
    t = timer.done("fetch", len(hits))
    profile = Profile(
        stages=tuple(timer.stages),
        took_ms=(t - t_start) * 1e3,
        gallery=cands.gallery,
        query_keywords=tuple(labels),
        relaxed=cands.relaxed,
        relax_reason=cands.relax_reason,
    )
    return SearchResult(hits=tuple(hits), total=cands.total, profile=profile)
