"""Where an Elasticsearch-backed index keeps its fragments: the two strategies of
:class:`~isr.plugin.es.backend.EsBackend`, and the typed records that pass between them and it.

Entry points: :class:`SidecarFragments` (a local :class:`~isr.plugin.es.sidecar.Sidecar` keyed
by `_id`, reranked here by :class:`~isr.plugin.store.maxsim.MaxSimScorer`) and
:class:`IndexFragments` (a `rank_vectors` field of the Elasticsearch documents, reranked inside
Elasticsearch by a rescore); :func:`fragment_home` picks one for a layout. Both answer the same
questions, so the backend asks instead of branching:

- writes: :meth:`stage` (take a checked batch's fragments; the sidecar writes them uncommitted,
  the index layout keeps copies for the documents), :meth:`commit` (fragments durable before a
  document points at them), :meth:`drop` (delete fragments by id), the application meta (an
  ingest's progress: the sidecar's meta rows, or the mapping's `_meta`);
- reads: :meth:`read_hits` (Elasticsearch hits -> :class:`HitKeys`), :meth:`score_keys`,
  :meth:`exhaustive`, :meth:`ids_at`, :meth:`check`.

Records: :class:`PendingDocs` (one batch as Elasticsearch will get it, kept until it is sent)
and :class:`HitKeys` (the keys, scores and hits of one search's answer).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from isr.encoders.record import Encoded
from isr.errors import Conflict, InvalidInput
from isr.plugin.es.mapping import (
    FAST_SCRIPT_FIELD,
    FRAGMENTS_FIELD,
    EsLayout,
    doc_source,
    fast_from_exact,
    fast_from_knn,
    maxsim_from_rescore,
)
from isr.plugin.es.sidecar import Sidecar
from isr.plugin.store.maxsim import MaxSimScorer

if TYPE_CHECKING:
    from isr.plugin.es.backend import EsBackend

__all__ = [
    "CheckReport",
    "FragmentHome",
    "HitKeys",
    "IndexFragments",
    "PendingDocs",
    "SidecarFragments",
    "fragment_home",
]


@dataclass(frozen=True)
class CheckReport:
    """Ids in Elasticsearch against ids with fragments (`isr check`)."""

    es_documents: int
    fragment_documents: int
    missing_fragments: tuple[str, ...]  # in Elasticsearch, no fragments: re-ingest them
    orphan_fragments: tuple[str, ...]  # fragments of documents Elasticsearch does not have
    deleted_orphans: int = 0
    deleted_missing: int = 0

    @property
    def consistent(self) -> bool:
        return not (self.missing_fragments or self.orphan_fragments)


@dataclass(frozen=True)
class PendingDocs:
    """One checked batch as Elasticsearch gets it, kept until it is sent."""

    ids: list[str]
    labels: list[tuple[str, ...]]  # top R_I keywords per document
    fast: np.ndarray  # (B, d_fast)
    frags: list[np.ndarray] | None  # B x (n_i, d) real fragments; None: in the sidecar
    sources: list[dict[str, Any] | None]

    def documents(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(id, `_source`) of each document, built as the bulk consumes them."""
        for i, d in enumerate(self.ids):
            frags = self.frags[i] if self.frags is not None else None
            yield d, doc_source(d, self.labels[i], self.fast[i], frags, self.sources[i])


@dataclass(frozen=True)
class HitKeys:
    """Elasticsearch hits as pipeline candidates: keys (C,) int64 (sidecar rows, or hit
    positions), their fast scores (C,), max-sim scores (C,) when Elasticsearch reranked,
    the hit of each key (what `fetch` reads back), and the hits left out for having no
    fragments."""

    keys: np.ndarray
    fast: np.ndarray
    maxsim: np.ndarray | None
    context: dict[int, dict[str, Any]]
    missing: int = 0


def _fast_of(hit: Mapping[str, Any], exact: bool) -> float:
    scripted = (hit.get("fields") or {}).get(FAST_SCRIPT_FIELD)
    if scripted:  # rank_vectors layout: _score is the max-sim, the fast score rides along
        return float(scripted[0])
    score = float(hit["_score"])
    return fast_from_exact(score) if exact else fast_from_knn(score)


class SidecarFragments:
    """Fragments in a local sidecar directory, keyed by `_id`; reranked in this process."""

    name = "sidecar"
    reranks_in_es = False

    def __init__(self, sidecar: Sidecar, scorer: MaxSimScorer) -> None:
        self.sidecar = sidecar
        self.scorer = scorer

    def close(self) -> None:
        self.sidecar.close()  # uncommitted rows roll back

    # -- writes ----------------------------------------------------------------------------
    def stage(self, ids: list[str], items: Encoded) -> tuple[list[np.ndarray] | None, set[str]]:
        """Write the fragments, uncommitted; returns (None: nothing for `_source`, the ids
        that had no fragments here before)."""
        new = set(ids) - set(self.sidecar.rows_of(ids))
        self.sidecar.upsert(ids, items.fragments, items.mask)
        return None, new

    def commit(self) -> None:
        self.sidecar.commit()

    def drop(self, ids: Sequence[str]) -> int:
        n = self.sidecar.delete(ids)
        self.sidecar.commit()
        return n

    def app_meta(self, es: EsBackend) -> dict[str, Any]:
        return self.sidecar.committed_meta()

    def put_app_meta(self, es: EsBackend, entries: Mapping[str, Any]) -> None:
        self.sidecar.commit(meta=entries)  # beside the fragments, in one sqlite transaction

    def nbytes(self) -> dict[str, int]:
        return {"sidecar": self.sidecar.nbytes()}

    # -- reads -----------------------------------------------------------------------------
    def read_hits(
        self, hits: list[dict[str, Any]], query: Encoded, rerank: bool, exact: bool
    ) -> HitKeys:
        rows = self.sidecar.rows_of([h["_id"] for h in hits])
        keep = [h for h in hits if h["_id"] in rows]
        keys = np.array([rows[h["_id"]] for h in keep], dtype=np.int64)
        fast = np.array([_fast_of(h, exact) for h in keep], dtype=np.float32)
        return HitKeys(keys, fast, None, dict(zip(keys.tolist(), keep)), len(hits) - len(keep))

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        return self.sidecar.rows_of(ids)

    def ids_at(self, keys: Sequence[int]) -> list[str]:
        return self.sidecar.ids_at(keys)

    def live_rows(self) -> tuple[np.ndarray, int]:
        """The live rows, after catching up with the writer, and the rows ever written."""
        if self.sidecar.readonly:
            self.sidecar.refresh()
        return self.sidecar.live_rows(), self.sidecar.n_rows

    def score_keys(self, q: np.ndarray, q_mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
        return self.scorer.score_rows(q, q_mask, self.sidecar.store, keys)

    def exhaustive(
        self, q: np.ndarray, q_mask: np.ndarray, k: int, keys: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.scorer.exhaustive(q, q_mask, self.sidecar.store, k, keys)

    def check(self, es: EsBackend, repair: bool, delete_missing: bool) -> CheckReport:
        if repair and self.sidecar.readonly:
            raise Conflict("check --repair needs the sidecar opened for writing")
        es_ids = set(es.iter_ids())
        if self.sidecar.readonly:
            self.sidecar.refresh()
        side_ids = set(self.sidecar.iter_ids())
        missing = tuple(sorted(es_ids - side_ids))
        orphans = tuple(sorted(side_ids - es_ids))
        n_orphans = n_missing = 0
        if repair and orphans:
            n_orphans = self.drop(orphans)
        if repair and delete_missing and missing:
            n_missing = es.delete(list(missing))
        return CheckReport(len(es_ids), len(side_ids), missing, orphans, n_orphans, n_missing)


class IndexFragments:
    """Fragments in the documents' `rank_vectors` field; Elasticsearch reranks them."""

    name = "rank_vectors"
    reranks_in_es = True
    sidecar = None

    def close(self) -> None:
        pass

    # -- writes ----------------------------------------------------------------------------
    def stage(self, ids: list[str], items: Encoded) -> tuple[list[np.ndarray] | None, set[str]]:
        """Copies of the real fragments, for `_source`; no local state to undo."""
        return [items.fragments[i][items.mask[i]] for i in range(len(ids))], set()

    def commit(self) -> None:
        pass  # the fragments travel with their documents

    def drop(self, ids: Sequence[str]) -> int:
        return 0  # deleted with their documents

    def app_meta(self, es: EsBackend) -> dict[str, Any]:
        return es.mapping_app_meta()

    def put_app_meta(self, es: EsBackend, entries: Mapping[str, Any]) -> None:
        es.put_mapping_app_meta(entries)

    def nbytes(self) -> dict[str, int]:
        return {}

    # -- reads -----------------------------------------------------------------------------
    def read_hits(
        self, hits: list[dict[str, Any]], query: Encoded, rerank: bool, exact: bool
    ) -> HitKeys:
        keys = np.arange(len(hits), dtype=np.int64)
        maxsim = None
        if rerank:
            n = int(query.mask[0].sum())
            maxsim = np.array([maxsim_from_rescore(h["_score"], n) for h in hits], np.float32)
        fast = np.array([_fast_of(h, exact) for h in hits], dtype=np.float32)
        return HitKeys(keys, fast, maxsim, dict(zip(keys.tolist(), hits)))

    def _here(self) -> InvalidInput:
        return InvalidInput("fragments live in Elasticsearch (rank_vectors), not here")

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        raise self._here()

    def ids_at(self, keys: Sequence[int]) -> list[str]:
        raise self._here()

    def score_keys(self, q: np.ndarray, q_mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
        raise self._here()

    def exhaustive(
        self, q: np.ndarray, q_mask: np.ndarray, k: int, keys: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        raise self._here()

    def check(self, es: EsBackend, repair: bool, delete_missing: bool) -> CheckReport:
        """A document without the field lacks fragments (there are no orphans to find)."""
        es_docs = len(es)
        lacking = {"bool": {"must_not": [{"exists": {"field": FRAGMENTS_FIELD}}]}}
        missing = tuple(sorted(es.iter_ids(lacking)))
        gone = es.delete(list(missing)) if (repair and delete_missing and missing) else 0
        return CheckReport(es_docs, es_docs - len(missing), missing, (), 0, gone)


FragmentHome = SidecarFragments | IndexFragments


def fragment_home(layout: EsLayout, sidecar: Sidecar | None, scorer: MaxSimScorer) -> FragmentHome:
    """The strategy of `layout`; a sidecar is needed exactly when fragments go there."""
    if (layout.fragments == "sidecar") != (sidecar is not None):
        raise InvalidInput(
            f"es backend: fragments in {layout.fragments!r} "
            + ("need a sidecar" if sidecar is None else "take no sidecar")
        )
    return SidecarFragments(sidecar, scorer) if sidecar is not None else IndexFragments()
