"""The Elasticsearch backend: keywords and fast vectors in Elasticsearch, fragments beside it.

Entry point: :class:`EsBackend` (`create`, `open`, `ingest`, `delete`, `check`, `close`), a
:class:`isr.plugin.backend.SearchBackend`, so :func:`isr.plugin.pipeline.search` runs on it.
Request bodies come from :mod:`isr.plugin.es.mapping`; this module only sends them.

Search, one round trip in the common case: an `msearch` carrying (1) a size-0 search that
counts the gallery, the documents the user's filters admit and those the keyword screen admits
among them, and (2) the top-level kNN with the screen and the filters in `knn.filter` (a
pre-filter). A second request follows only when the counts say so: the screen admits fewer than
`size` documents (it is relaxed, as in the embedded pipeline), or the filters admit at most
max(k, exact_threshold) documents (a kNN with num_candidates >= that count, which Lucene answers
exactly by scoring every admitted document, replaces the graph walk, which is slow and inexact
when most of the graph is filtered out; no script, so no lang-painless needed). Fragments live either in a
:class:`~isr.plugin.es.sidecar.Sidecar` keyed by `_id` (reranked here, on the GPU when there is one)
or in a `rank_vectors` field (reranked inside Elasticsearch by a `maxSimDotProduct` rescore).

Ingest writes the sidecar first and commits it, then streams the documents through
`helpers.streaming_bulk` (chunked, 429s retried with exponential backoff); failed documents are
raised together as one :class:`BulkIngestError`. A crash between the two leaves sidecar rows
without an Elasticsearch document, which :meth:`EsBackend.check` finds and repairs. Both write
paths, :meth:`EsBackend.ingest` and the loader's :class:`isr.plugin.es.writer.EsWriter` (which
decides itself when to send), go through one public write API: `check_batch` (validate),
`stage` (fragments to their home, the batch as a typed :class:`~isr.plugin.es.homes.PendingDocs`),
`write` (commit the fragments, bulk, refresh, raise the failures), `existing` (which ids
Elasticsearch holds) and `app_meta` / `put_app_meta` (progress, committed beside the fragments).

Where the fragments live is a strategy object, `EsBackend.home`
(:mod:`isr.plugin.es.homes`: a sidecar, or the index's `rank_vectors`), so the search and
write paths ask it instead of branching on the layout.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import elasticsearch
import numpy as np
from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk

from isr.encoders.record import Encoded
from isr.errors import Conflict, InvalidInput, IsrError, NotFound
from isr.plugin.backend import Candidates, FetchedDoc, Stage, check_ids, relax_reason
from isr.plugin.config import IndexConfig
from isr.plugin.es.homes import (
    CheckReport,
    FragmentHome,
    HitKeys,
    IndexFragments,
    PendingDocs,
    fragment_home,
)
from isr.plugin.es.mapping import (
    FAST_FIELD,
    KEYWORDS_FIELD,
    ROOT,
    EsLayout,
    app_meta_of,
    exact_body,
    exhaustive_body,
    filter_query,
    index_body,
    keyword_query,
    knn_body,
    label_counts_body,
    layout_of_mapping,
    rescore_part,
    stats_body,
    with_app_meta,
)
from isr.plugin.es.sidecar import Sidecar
from isr.plugin.pipeline import ES_EXACT_THRESHOLD, SearchOptions
from isr.plugin.store.maxsim import MaxSimScorer

__all__ = ["BulkIngestError", "CheckReport", "EsBackend", "PendingDocs"]

REFRESH = (True, False, "wait_for")
PAGE = 5_000  # ids per page when listing an index
BULK_META = "bulk_load"  # _meta.isr_app entry: the settings a bulk load replaced


class BulkIngestError(IsrError):
    """Some documents of a bulk ingest failed; `failed` holds streaming_bulk's error items."""

    def __init__(self, message: str, failed: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.failed = failed


@contextmanager
def _es_errors(what: str) -> Iterator[None]:
    """Elasticsearch client errors as isr errors (the facade maps those to status codes)."""
    try:
        yield
    except elasticsearch.NotFoundError as e:
        raise NotFound(f"{what}: {_reason(e)}") from e
    except elasticsearch.ConflictError as e:
        raise Conflict(f"{what}: {_reason(e)}") from e
    except elasticsearch.BadRequestError as e:
        raise InvalidInput(f"{what}: {_reason(e)}") from e
    except elasticsearch.ApiError as e:
        raise IsrError(f"{what}: Elasticsearch answered {e.meta.status}: {_reason(e)}") from e
    except elasticsearch.TransportError as e:
        raise IsrError(f"{what}: Elasticsearch unreachable ({e})") from e


def _reason(e: elasticsearch.ApiError) -> str:
    body = e.body
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        err = body["error"]
        return f"{err.get('type')}: {err.get('reason')}"
    return str(e.message)


class EsBackend:
    """One isr index in Elasticsearch; its fragments live where `home` says (a
    :class:`~isr.plugin.es.homes.SidecarFragments` or an
    :class:`~isr.plugin.es.homes.IndexFragments`, see :mod:`isr.plugin.es.homes`)."""

    def __init__(
        self,
        client: Elasticsearch,
        index: str,
        config: IndexConfig,
        layout: EsLayout,
        sidecar: Sidecar | None,
        device: str | None = None,
    ) -> None:
        self.scorer = MaxSimScorer(device)
        self.home: FragmentHome = fragment_home(layout, sidecar, self.scorer)
        self.client = client
        self.index = index
        self.config = config
        self.layout = layout

    @property
    def sidecar(self) -> Sidecar | None:
        """The sidecar of the fragments (None: they live in Elasticsearch, rank_vectors)."""
        return self.home.sidecar

    # -- life cycle ----------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        client: Elasticsearch,
        index: str,
        config: IndexConfig,
        layout: EsLayout | None = None,
        sidecar_path: str | Path | None = None,
        device: str | None = None,
    ) -> EsBackend:
        """Create the Elasticsearch index (and the sidecar directory when fragments go there)."""
        layout = layout or EsLayout()
        body = index_body(config, layout)  # validates before anything is created
        if layout.fragments == "sidecar" and sidecar_path is None:
            raise InvalidInput("es backend: fragments in a sidecar need a sidecar directory")
        if layout.fragments == "rank_vectors":
            require_modules(client, RANK_VECTORS_MODULES, "--es-fragments rank_vectors")
        if cls.index_exists(client, index):
            raise Conflict(f"Elasticsearch index {index!r} already exists")
        sidecar = None
        if layout.fragments == "sidecar":
            assert sidecar_path is not None
            sidecar = Sidecar.create(sidecar_path, config, index)
        try:
            with _es_errors(f"creating index {index!r}"):
                client.indices.create(
                    index=index, settings=body["settings"], mappings=body["mappings"]
                )
        except BaseException:
            if sidecar is not None:
                sidecar.close()
                shutil.rmtree(sidecar.path)  # created just now, empty: a retry must not trip on it
            raise
        return cls(client, index, config, layout, sidecar, device)

    @classmethod
    def open(
        cls,
        client: Elasticsearch,
        index: str,
        sidecar_path: str | Path | None = None,
        readonly: bool = True,
        device: str | None = None,
    ) -> EsBackend:
        """Open an isr index: its layout comes from the mapping's `_meta.isr`."""
        config, layout = cls.read_layout(client, index)
        sidecar = None
        if layout.fragments == "sidecar":
            if sidecar_path is None:
                raise InvalidInput(
                    f"Elasticsearch index {index!r} keeps fragments in a sidecar; give its path"
                )
            sidecar = Sidecar.open(sidecar_path, readonly=readonly, expect=config)
        return cls(client, index, config, layout, sidecar, device)

    @staticmethod
    def index_exists(client: Elasticsearch, index: str) -> bool:
        with _es_errors(f"checking index {index!r}"):
            return bool(client.indices.exists(index=index))

    @staticmethod
    def mapping_of(client: Elasticsearch, index: str) -> dict[str, Any]:
        """The mapping of the one index `index` names (`GET /{index}/_mapping`)."""
        with _es_errors(f"reading the mapping of index {index!r}"):
            got = client.indices.get_mapping(index=index)
        if len(got) != 1:
            raise InvalidInput(f"{index!r} names {len(got)} indexes; open one isr index")
        ((_, body),) = got.body.items()
        mapping: dict[str, Any] = body.get("mappings", {})
        return mapping

    @classmethod
    def read_layout(cls, client: Elasticsearch, index: str) -> tuple[IndexConfig, EsLayout]:
        """IndexConfig and EsLayout of an isr index, from its mapping's `_meta.isr`."""
        return layout_of_mapping(cls.mapping_of(client, index), index)

    def close(self) -> None:
        self.home.close()

    def __enter__(self) -> EsBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with _es_errors(f"counting index {self.index!r}"):
            return int(self.client.count(index=self.index)["count"])

    # -- writes --------------------------------------------------------------------------
    def check_batch(
        self,
        ids: Sequence[str],
        items: Encoded,
        sources: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> tuple[list[str], list[Mapping[str, Any] | None]]:
        """Validate one batch as :meth:`ingest` takes it; returns the ids and the sources as
        lists (a source of None: no user fields)."""
        if not isinstance(items, Encoded):
            raise InvalidInput(f"items: expected an Encoded batch, got {type(items).__name__}")
        n = len(items)
        out = check_ids(ids, n)
        c = self.config
        if items.d_fast != c.d_fast or items.d_frag != c.d_frag:
            raise InvalidInput(
                f"items have fast/fragment dims {items.d_fast}/{items.d_frag}, "
                f"the index expects {c.d_fast}/{c.d_frag}"
            )
        real = items.mask.sum(axis=1)
        if n and int(real.max()) > c.max_frags:
            i = int(np.argmax(real > c.max_frags))
            raise InvalidInput(
                f"item {i} ({out[i]!r}) has {int(real[i])} fragments, the index keeps {c.max_frags}"
            )
        srcs: list[Mapping[str, Any] | None] = list(sources) if sources is not None else [None] * n
        if len(srcs) != n:
            raise InvalidInput(f"sources: {len(srcs)} sources for {n} items")
        for i, src in enumerate(srcs):
            if src is not None and not isinstance(src, Mapping):
                raise InvalidInput(f"sources[{i}]: _source must be an object")
            if src is not None and ROOT in src:
                raise InvalidInput(
                    f"sources[{i}] ({out[i]!r}): the top-level field {ROOT!r} is reserved for "
                    "isr's own fields"
                )
        return out, srcs

    def stage(
        self, ids: list[str], items: Encoded, srcs: list[Mapping[str, Any] | None]
    ) -> tuple[PendingDocs, set[str]]:
        """Take a checked batch (see :meth:`check_batch`): its fragments go to their home
        (the sidecar writes them, uncommitted; the rank_vectors layout keeps copies for the
        documents); returns the batch as Elasticsearch will get it, and the ids whose fragments
        were not in the sidecar before (a failed bulk deletes those, see :meth:`raise_failed`).
        Nothing reaches Elasticsearch before :meth:`write`."""
        frags, new = self.home.stage(ids, items)
        r_i = self.config.r_i
        pending = PendingDocs(
            ids=ids,
            labels=[items.keywords[i].top(r_i) for i in range(len(ids))],
            fast=items.fast,
            frags=frags,
            sources=[dict(s) if s is not None else None for s in srcs],
        )
        return pending, new

    def write(
        self,
        pending: Sequence[PendingDocs],
        new: set[str],
        *,
        refresh: bool | str = False,
        refresh_after: bool = False,
        **bulk: Any,
    ) -> int:
        """Send staged batches: (1) commit their fragments, so a document never becomes
        visible without them; (2) bulk-index the documents (`bulk`: :meth:`send`'s retry
        options; refresh: Elasticsearch's bulk parameter); (3) with refresh_after, refresh
        the index, also after a partial failure (what got in is counted). Failed documents
        raise BulkIngestError, after deleting the fragments of those among `new`. Returns
        how many documents were sent."""
        self.home.commit()  # (1)
        n = sum(len(p.ids) for p in pending)
        if not n:
            return 0
        docs = (doc for p in pending for doc in p.documents())
        failed = self.send(docs, refresh=refresh, **bulk)  # (2)
        if refresh_after:
            self.refresh()  # (3)
        if failed:
            self.raise_failed(failed, n, new)
        return n

    def send(
        self,
        docs: Iterable[tuple[str, dict[str, Any]]],
        *,
        refresh: bool | str = False,
        chunk_size: int = 500,
        max_retries: int = 5,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> list[dict[str, Any]]:
        """Index (id, `_source`) pairs through `streaming_bulk` (429s retried with backoff);
        returns streaming_bulk's items of the documents that failed ([] when none did)."""
        if refresh not in REFRESH:
            raise InvalidInput(f"refresh must be one of {REFRESH}, got {refresh!r}")
        actions = (
            {"_op_type": "index", "_index": self.index, "_id": d, "_source": s} for d, s in docs
        )
        failed: list[dict[str, Any]] = []
        with _es_errors(f"bulk ingest into {self.index!r}"):
            for ok, info in streaming_bulk(
                self.client,
                actions,
                chunk_size=chunk_size,
                max_retries=max_retries,
                initial_backoff=initial_backoff,
                max_backoff=max_backoff,
                raise_on_error=False,
                refresh=refresh,
            ):
                if not ok:
                    failed.append(info)
        return failed

    def ingest(
        self,
        ids: Sequence[str],
        items: Encoded,
        sources: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        refresh: bool | str = False,
        chunk_size: int = 500,
        max_retries: int = 5,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
    ) -> int:
        """Index (or replace) documents; returns how many. Raises BulkIngestError naming the
        failed ones. refresh: True, False or "wait_for", as Elasticsearch's bulk takes it."""
        id_list, srcs = self.check_batch(ids, items, sources)
        if refresh not in REFRESH:
            raise InvalidInput(f"refresh must be one of {REFRESH}, got {refresh!r}")
        n = len(id_list)
        if n == 0:
            return 0
        pending, new = self.stage(id_list, items, srcs)
        return self.write(
            [pending],
            new,
            refresh=refresh,
            chunk_size=chunk_size,
            max_retries=max_retries,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
        )

    def raise_failed(self, failed: list[dict[str, Any]], n: int, new: set[str]) -> NoReturn:
        """Raise BulkIngestError for the failed items of a bulk of n documents, first deleting
        the sidecar fragments of the failed documents in `new` (ids Elasticsearch did not
        have before: their fragments would belong to nobody)."""
        bad = [next(iter(f.values())).get("_id") for f in failed]
        self.home.drop([d for d in bad if d in new])
        first = next(iter(failed[0].values())).get("error")
        raise BulkIngestError(
            f"{len(failed)} of {n} documents failed to index into {self.index!r} "
            f"(first: {bad[0]!r}: {first})",
            failed,
        )

    def existing(self, ids: Sequence[str]) -> set[str]:
        """The ids among `ids` that Elasticsearch holds. A realtime `mget` without `_source`:
        documents indexed but not refreshed yet count."""
        ids = list(ids)
        out: set[str] = set()
        for i in range(0, len(ids), PAGE):
            with _es_errors(f"looking up ids in {self.index!r}"):
                resp = self.client.mget(index=self.index, ids=ids[i : i + PAGE], source=False)
            out.update(d["_id"] for d in resp["docs"] if d.get("found"))
        return out

    def delete(self, ids: Sequence[str], refresh: bool | str = False) -> int:
        """Delete documents by id from Elasticsearch and the sidecar; unknown ids are skipped.
        Returns how many Elasticsearch had."""
        ids = check_ids(ids, len(ids))
        if refresh not in REFRESH:
            raise InvalidInput(f"refresh must be one of {REFRESH}, got {refresh!r}")
        actions = ({"_op_type": "delete", "_index": self.index, "_id": d} for d in ids)
        deleted, failed = 0, []
        with _es_errors(f"bulk delete from {self.index!r}"):
            for ok, info in streaming_bulk(
                self.client, actions, raise_on_error=False, ignore_status=(404,), refresh=refresh
            ):
                item = info.get("delete", {})
                if ok:
                    deleted += 1
                elif item.get("status") != 404:
                    failed.append(info)
        self.home.drop(ids)
        if failed:
            raise BulkIngestError(f"{len(failed)} of {len(ids)} deletes failed", failed)
        return deleted

    def app_meta(self) -> dict[str, Any]:
        """Committed application entries (an ingest's progress): beside the fragments, in the
        sidecar's meta rows or the mapping's `_meta` (see :meth:`put_app_meta`)."""
        return self.home.app_meta(self)

    def put_app_meta(self, entries: Mapping[str, Any]) -> None:
        """Commit application entries (JSON values by name) beside the fragments: in the
        sidecar's meta rows (its own sqlite transaction), or in the mapping's `_meta`."""
        self.home.put_app_meta(self, entries)

    def nbytes(self) -> dict[str, int]:
        """Bytes on disk: the index's primary shards, and the sidecar's files when it has one."""
        return {"elasticsearch": self.store_bytes(), **self.home.nbytes()}

    def mapping_app_meta(self) -> dict[str, Any]:
        """Application entries stored in the mapping's `_meta`."""
        return app_meta_of(self.mapping_of(self.client, self.index))

    def put_mapping_app_meta(self, entries: Mapping[str, Any]) -> None:
        """Store application entries in the mapping's `_meta`, beside `_meta.isr`.
        Elasticsearch replaces `_meta` as a whole, so the current one is read and sent back
        with the entries merged in."""
        body = with_app_meta(self.mapping_of(self.client, self.index).get("_meta"), entries)
        with _es_errors(f"updating the _meta of {self.index!r}"):
            self.client.indices.put_mapping(index=self.index, meta=body)

    def store_bytes(self) -> int:
        """Bytes on disk of the index's primary shards (replicas not counted)."""
        with _es_errors(f"reading the store size of {self.index!r}"):
            resp = self.client.indices.stats(index=self.index, metric="store")
        return int(resp["_all"]["primaries"]["store"]["size_in_bytes"])

    def refresh(self) -> None:
        """Make every indexed document searchable now (Elasticsearch's `_refresh`)."""
        with _es_errors(f"refreshing {self.index!r}"):
            self.client.indices.refresh(index=self.index)

    # -- bulk-load settings --------------------------------------------------------------
    def _index_settings(self) -> dict[str, Any]:
        with _es_errors(f"reading the settings of {self.index!r}"):
            got = self.client.indices.get_settings(index=self.index, flat_settings=True)
        ((_, body),) = got.body.items()
        out: dict[str, Any] = body.get("settings", {})
        return out

    def _put_settings(self, settings: dict[str, Any]) -> None:
        with _es_errors(f"updating the settings of {self.index!r}"):
            self.client.indices.put_settings(index=self.index, settings={"index": settings})

    def begin_bulk_load(self, replicas: bool) -> dict[str, Any]:
        """Set the index up for a bulk load: `refresh_interval: -1` (no periodic refresh:
        Lucene writes few large segments instead of one per second, and merging HNSW segments,
        which rebuilds their graphs, is what slows a long load down; a load that commits
        refreshes explicitly, so committed documents stay searchable), and with `replicas`
        `number_of_replicas: 0` (no replica indexing; recovered once by
        :meth:`end_bulk_load`; for a new index, not one that is serving searches).

        The settings it replaces are saved first in the mapping's `_meta.isr_app.bulk_load`
        (a load killed before :meth:`end_bulk_load` leaves them there for the next writer to
        restore); a saved entry is kept as it is, so a resumed load restores the original
        values, not the bulk ones. Returns the saved settings."""
        saved = self.mapping_app_meta().get(BULK_META)
        cur = self._index_settings()
        if not isinstance(saved, dict):
            saved = {
                "refresh_interval": cur.get("index.refresh_interval"),
                "number_of_replicas": None,
            }
            auto = str(cur.get("index.auto_expand_replicas", "false")).lower()
            if replicas and auto == "false":  # auto-expanding replicas are left alone
                saved["number_of_replicas"] = cur.get("index.number_of_replicas")
            self.put_mapping_app_meta({BULK_META: saved})  # before anything changes
        want: dict[str, Any] = {"refresh_interval": "-1"}
        if saved["number_of_replicas"] is not None:
            want["number_of_replicas"] = 0
        if any(str(cur.get(f"index.{k}")) != str(v) for k, v in want.items()):
            self._put_settings(want)
        return dict(saved)

    def end_bulk_load(self) -> bool:
        """Restore the settings :meth:`begin_bulk_load` saved (None: back to the cluster's
        default) and clear the entry; False when no bulk load was open."""
        saved = self.mapping_app_meta().get(BULK_META)
        if not isinstance(saved, dict):
            return False
        back: dict[str, Any] = {"refresh_interval": saved.get("refresh_interval")}
        if saved.get("number_of_replicas") is not None:
            back["number_of_replicas"] = saved["number_of_replicas"]
        self._put_settings(back)
        self.put_mapping_app_meta({BULK_META: None})
        return True

    # -- consistency ---------------------------------------------------------------------
    def iter_ids(self, query: dict[str, Any] | None = None) -> Iterator[str]:
        """Every `_id` in the index (matching `query`): a point in time walked with
        search_after on `_shard_doc`, Elasticsearch's cheapest total order."""
        with _es_errors(f"opening a point in time on {self.index!r}"):
            pit = self.client.open_point_in_time(index=self.index, keep_alive="2m")["id"]
        try:
            after: list[Any] | None = None
            while True:
                body: dict[str, Any] = {
                    "size": PAGE,
                    "_source": False,
                    "track_total_hits": False,
                    "sort": [{"_shard_doc": "asc"}],
                    "pit": {"id": pit, "keep_alive": "2m"},
                }
                if query is not None:
                    body["query"] = query
                if after is not None:
                    body["search_after"] = after
                with _es_errors(f"listing the ids of {self.index!r}"):
                    resp = self.client.search(body=body)
                hits = resp["hits"]["hits"]
                pit = resp.get("pit_id", pit)
                if not hits:
                    return
                yield from (h["_id"] for h in hits)
                after = hits[-1]["sort"]
        finally:
            with _es_errors("closing a point in time"):
                self.client.close_point_in_time(id=pit)

    def check(self, repair: bool = False, delete_missing: bool = False) -> CheckReport:
        """Compare Elasticsearch's ids with the ids that have fragments.

        repair: delete orphan fragments (sidecar rows of documents Elasticsearch lacks).
        delete_missing: also delete the Elasticsearch documents that have no fragments
        (otherwise they are only reported, for re-ingest).
        """
        return self.home.check(self, repair, delete_missing)

    # -- the SearchBackend face ----------------------------------------------------------
    def _msearch(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        searches: list[dict[str, Any]] = []
        for b in bodies:
            searches += [{}, b]
        with _es_errors(f"searching {self.index!r}"):
            resp = self.client.msearch(index=self.index, searches=searches)
        out = []
        for r in resp["responses"]:
            if "error" in r:
                err, status = r["error"], int(r.get("status", 500))
                msg = f"searching {self.index!r}: {err.get('type')}: {err.get('reason')}"
                if status == 400:
                    raise InvalidInput(msg)
                if status == 404:
                    raise NotFound(msg)
                raise IsrError(f"{msg} (status {status})")
            out.append(r)
        return out

    def _body(
        self,
        query: Encoded,
        opt: SearchOptions,
        filters: list[dict[str, Any]],
        exact: bool,
        admitted: int = 0,
    ) -> dict[str, Any]:
        q_fast = query.fast[0]
        src = opt.with_source
        if not opt.use_knn:  # rank_vectors only (checked by the caller)
            q_frags = query.fragments[0][query.mask[0]]
            return exhaustive_body(q_frags, q_fast, opt.size, filters, src)
        rescore, size = None, None
        if self.home.reranks_in_es and opt.use_rerank:
            q_frags = query.fragments[0][query.mask[0]]
            rescore, size = rescore_part(q_frags, q_fast, opt.rerank_window), opt.size
        if exact:
            quantized = self.layout.vector_index not in ("hnsw", "flat")
            return exact_body(q_fast, opt.k, admitted, filters, src, quantized, rescore, size)
        return knn_body(q_fast, opt.k, opt.num_candidates, filters, src, rescore, size)

    def candidates(self, query: Encoded, labels: tuple[str, ...], opt: SearchOptions) -> Candidates:
        """The user filter, the keyword screen and the kNN in one msearch (see the module
        docstring); the filter and keyword stages report the exact counts of its size-0
        search and no time of their own: their time is the knn stage's."""
        if not opt.use_knn and not self.home.reranks_in_es:
            return self._local_exhaustive(opt, labels)
        t0 = time.perf_counter()
        pool = [filter_query(opt.filter_tree)] if opt.filter_tree is not None else []
        kw = opt.keywords
        if opt.use_keywords and labels and kw.r_i is not None and kw.r_i < self.config.r_i:
            raise InvalidInput(
                f"keywords.r_i {kw.r_i}: Elasticsearch index {self.index!r} stores each "
                f"document's top {self.config.r_i} labels as one unordered keyword set, so the "
                f"screen can only use all of them (r_i >= {self.config.r_i} or none); use the "
                "embedded backend for a smaller r_i"
            )
        screen = (
            keyword_query(labels, kw.mode, kw.minimum_should_match)
            if (opt.use_keywords and labels)
            else None
        )
        filters = pool + ([screen] if screen is not None else [])
        stats, res = self._msearch(
            [stats_body(pool, screen), self._body(query, opt, filters, exact=False)]
        )
        gallery = int(stats["aggregations"]["gallery"]["doc_count"])
        pool_n = int(stats["hits"]["total"]["value"])
        admitted = pool_n if screen is None else int(stats["aggregations"]["screen"]["doc_count"])
        reason = relax_reason(labels, admitted, opt.size) if opt.use_keywords else ""
        relaxed = bool(reason)
        if relaxed and screen is not None:
            admitted, filters = pool_n, pool
        requests = 1
        limit = ES_EXACT_THRESHOLD if opt.exact_threshold is None else opt.exact_threshold
        exact = opt.use_knn and bool(filters) and admitted <= max(opt.k, limit)
        if (relaxed and screen is not None) or exact:
            res = self._msearch([self._body(query, opt, filters, exact, admitted)])[0]
            requests = 2
        hits = res["hits"]["hits"]
        ms = (time.perf_counter() - t0) * 1e3
        stages: list[Stage] = []
        via = "exact counts from the size-0 search in the same msearch; time in the knn stage"
        if opt.filter_tree is not None:
            stages.append(Stage("filter", 0.0, pool_n, via))
        if opt.use_keywords:
            stages.append(Stage("keywords", 0.0, admitted, reason or via))
        cands: HitKeys = self.home.read_hits(hits, query, opt.use_rerank, exact)
        method = "exact" if exact else ("hnsw" if opt.use_knn else "exhaustive max-sim")
        detail = f"{method} in Elasticsearch, {requests} request(s)"
        if cands.missing:
            detail += f"; {cands.missing} hits have no fragments in the sidecar (isr check)"
        if opt.use_knn:
            # with the rank_vectors rescore only `size` hits come back, of k candidates
            found = min(opt.k, admitted) if cands.maxsim is not None else len(hits)
            stages.append(Stage("knn", ms, found, detail))
        if cands.maxsim is not None:  # reranked inside Elasticsearch (rank_vectors)
            if opt.use_knn:
                scored = min(opt.rerank_window, admitted)
                stages.append(Stage("rerank", 0.0, scored, "rank_vectors rescore; time in knn"))
            else:
                stages.append(Stage("rerank", ms, admitted, detail))
        return Candidates(
            keys=cands.keys,
            fast=cands.fast,
            total=admitted,
            gallery=gallery,
            stages=tuple(stages),
            relaxed=relaxed,
            relax_reason=reason,
            maxsim=cands.maxsim,
            context=cands.context,
        )

    def label_shares(self, labels: Sequence[str], r_i: int | None = None) -> dict[str, float]:
        """Share of the live documents storing each label (the keyword "cost" rule's input):
        one size-0 search, a `terms` aggregation on `isr.keywords` restricted to `labels`
        (exact: every shard returns each of its included terms). Elasticsearch's shard
        request cache keeps the answer until the shard's next refresh, so repeated queries
        cost a cache hit and a refresh (a commit) brings fresh counts. Labels no document
        stores are absent.

        Elasticsearch stores each document's top R_I labels as one keyword set (unordered),
        so only r_i None or >= R_I (every stored label) can be counted; a smaller r_i is
        refused, as the screen itself cannot apply it here."""
        r = self.config.r_i
        if r_i is not None and r_i < r:
            raise InvalidInput(
                f"keywords.r_i {r_i}: Elasticsearch index {self.index!r} stores each "
                f"document's top {r} labels as one unordered keyword set, so only r_i >= {r} "
                "(or none) can be counted; use the embedded backend for a smaller r_i"
            )
        want = sorted({str(w) for w in labels})
        if not want:
            return {}
        body = label_counts_body(want)
        with _es_errors(f"counting keyword labels in {self.index!r}"):
            resp = self.client.search(index=self.index, body=body, request_cache=True)
        n = max(1, int(resp["hits"]["total"]["value"]))
        counts = {b["key"]: int(b["doc_count"]) for b in resp["aggregations"]["labels"]["buckets"]}
        return {w: counts[w] / n for w in labels if counts.get(w)}

    def _local_exhaustive(self, opt: SearchOptions, labels: tuple[str, ...]) -> Candidates:
        if opt.filter_tree is not None or (opt.use_keywords and labels):
            raise InvalidInput(
                "exhaustive max-sim with filters or keywords needs the embedded backend or "
                "fragments in rank_vectors; with a sidecar only the unfiltered 'exhaustive' "
                "ablation runs"
            )
        assert not isinstance(self.home, IndexFragments)
        t0 = time.perf_counter()
        rows, n_rows = self.home.live_rows()
        gallery = len(self)
        keys = None if len(rows) == n_rows else rows
        stages: list[Stage] = []
        reason = ""
        if opt.use_keywords:  # without keywords (refused above otherwise): no screen
            reason = relax_reason(labels, None, opt.size)
            stages.append(Stage("keywords", (time.perf_counter() - t0) * 1e3, len(rows), reason))
        return Candidates(keys, None, len(rows), gallery, tuple(stages), bool(reason), reason)

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Sidecar rows of the ids that have fragments there (for reranking by id)."""
        if self.home.reranks_in_es:
            raise InvalidInput(
                f"index {self.index!r} keeps fragments in Elasticsearch (rank_vectors); "
                "rerank there with a rescore"
            )
        return self.home.rows_of(ids)

    def score_keys(self, q: np.ndarray, q_mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
        return self.home.score_keys(q, q_mask, keys)

    def exhaustive(
        self, q: np.ndarray, q_mask: np.ndarray, k: int, keys: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.home.exhaustive(q, q_mask, k, keys)

    def fetch(self, cands: Candidates, keys: np.ndarray, with_source: bool) -> list[FetchedDoc]:
        if cands.context is not None:
            out = []
            for k in keys.tolist():
                h = cands.context[k]
                labels = tuple((h.get("fields") or {}).get(KEYWORDS_FIELD, ()))
                src = h.get("_source") if with_source else None
                out.append(FetchedDoc(h["_id"], src, labels))
            return out
        # the sidecar's exhaustive rerank (no hits to read back): fetch by id
        docs = self._mget(self.home.ids_at(keys.tolist()), [f"{ROOT}.fast"])
        out = []
        for d in docs:
            src = dict(d.get("_source") or {})
            own = src.pop(ROOT, {})
            out.append(FetchedDoc(d["_id"], src if with_source else None, tuple(own["keywords"])))
        return out

    def fast_scores_of(self, q_fast: np.ndarray, cands: Candidates, keys: np.ndarray) -> np.ndarray:
        docs = self._mget(self.home.ids_at(keys.tolist()), [], includes=[FAST_FIELD])
        x = np.array([d["_source"][ROOT]["fast"] for d in docs], dtype=np.float32)  # (C, d)
        return (x @ q_fast).astype(np.float32)

    def _mget(
        self, ids: list[str], excludes: list[str], includes: list[str] | None = None
    ) -> list[dict[str, Any]]:
        with _es_errors(f"fetching documents from {self.index!r}"):
            resp = self.client.mget(
                index=self.index,
                ids=ids,
                source_excludes=excludes or None,
                source_includes=includes,
            )
        docs = resp["docs"]
        lost = [d["_id"] for d in docs if not d.get("found")]
        if lost:
            raise NotFound(f"documents {lost[:5]} are in the sidecar but not in {self.index!r}")
        return list(docs)


# what the rank_vectors layout needs from the cluster: the field type, and painless for the
# maxSimDotProduct rescore and the fast-score script field
RANK_VECTORS_MODULES = ("rank-vectors", "lang-painless")


def cluster_modules(client: Elasticsearch) -> set[str]:
    """The modules and plugins every node of the cluster has (`GET _nodes`)."""
    with _es_errors("listing the cluster's modules"):
        r = client.nodes.info(filter_path="nodes.*.modules.name,nodes.*.plugins.name")
    nodes = list((r.body if hasattr(r, "body") else r).get("nodes", {}).values())
    sets = [{m["name"] for m in n.get("modules", []) + n.get("plugins", [])} for n in nodes]
    return set.intersection(*sets) if sets else set()


def require_modules(client: Elasticsearch, needed: tuple[str, ...], what: str) -> None:
    """InvalidInput naming the modules `what` needs that the cluster lacks."""
    have = cluster_modules(client)
    missing = [m for m in needed if m not in have]
    if missing:
        raise InvalidInput(
            f"{what} needs the Elasticsearch module(s) {', '.join(missing)}, which this "
            f"cluster lacks (it has: {', '.join(sorted(have)) or 'none'}); use the sidecar "
            "layout (--sidecar DIR) or a distribution that ships them"
        )
