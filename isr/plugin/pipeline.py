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
from isr.plugin.backend import KNN_METHODS, SearchBackend, Stage, StageTimer
from isr.plugin.filters import Filter, parse_filter
from isr.plugin.keyword_rule import (
    KEYWORD_FIELDS,
    RULES,
    TEXT_MODES,
    check_keyword_options,
    select_labels,
)

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
    labels hold `mass` of the query's probability, or once prod(1 - p) over them is at most
    `miss`; with `gain`, a further label is taken only while its added chance of keeping the
    query's image per share of the gallery it admits is at least `gain` (see
    :mod:`isr.plugin.keyword_rule`); `scale` multiplies the probabilities those stops read (the
    chance that a matching document stores a label the query has: below 1 for image queries
    against captions).
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
    miss: float = 0.0
    gain: float = 0.0
    scale: float = 1.0
    # The fields the caller named; None: all of them (these options are used as they are). A
    # search fills the others from the index's recorded defaults (IndexConfig.keywords), so a
    # query naming only r_t keeps the index's rule and text mode: see partial() and over().
    given: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_keyword_options({f: getattr(self, f) for f in KEYWORD_FIELDS})
        if self.given is not None:
            object.__setattr__(self, "given", tuple(self.given))
            unknown = sorted(set(self.given) - set(KEYWORD_FIELDS))
            if unknown:
                raise InvalidInput(f"keywords.given: unknown option(s) {unknown}")
        # a partial set without r_t is checked once merged (the index's r_t may be larger)
        if (self.given is None or "r_t" in self.given) and self.minimum_should_match > self.r_t:
            raise InvalidInput(
                f"keywords.minimum_should_match must be in [1, {self.r_t}] (r_t), "
                f"got {self.minimum_should_match}"
            )

    @classmethod
    def partial(cls, values: dict[str, Any], where: str = "keywords") -> KeywordOptions:
        """The options a query names (HTTP ext.isr.keywords, CLI flags), checked here with
        `where` in the message; the rest come from the index's defaults at search time."""
        check_keyword_options(values, where)
        return cls(**values, given=tuple(sorted(values)))

    def over(self, defaults: dict[str, Any]) -> KeywordOptions:
        """These options over an index's defaults: the given fields win, the others come from
        `defaults`, then the built-in ones. Fully given options are returned as they are."""
        if self.given is None:
            return self
        return KeywordOptions(**{**defaults, **{f: getattr(self, f) for f in self.given}})

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
        if (
            self.rule == "top"
            and self.p_min == 0
            and self.mass >= 1
            and self.miss == 0
            and self.gain == 0
        ):
            return tuple(labels[: self.r_t])
        shares = None
        if self.rule == "cost" or self.stop < 1 or self.gain > 0:
            if backend is None or not hasattr(backend, "label_shares"):
                raise InvalidInput(
                    "keywords.rule 'cost', keywords.stop and keywords.gain need the labels' document "
                    "frequencies, which this backend does not give; use rule 'top'"
                )
            shares = backend.label_shares(labels, self.r_i)
        alpha = self.alpha if self.rule == "cost" else 0.0
        return select_labels(labels, probs, self.r_t, shares=shares, alpha=alpha,
                             p_min=self.p_min, mass=self.mass, stop=self.stop,
                             miss=self.miss, gain=self.gain, scale=self.scale)  # fmt: skip


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
    embedded methods ("gather", "exact", "compressed", "hnsw").
    """

    size: int = 10
    num_candidates: int = 1000
    rerank_window: int = 200
    # default: nothing named, so the index's recorded keyword defaults apply
    keywords: KeywordOptions = field(default_factory=lambda: KeywordOptions(given=()))
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
    if opt.keywords.given is not None:  # fill what the query did not name from the index's defaults
        opt = replace(opt, keywords=opt.keywords.over(c.keywords))
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
