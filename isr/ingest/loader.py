"""Stream a gallery into an index: source -> the bundle's image or text tower -> writer.

Entry point: :func:`load_gallery(source, target, bundle, options) -> IngestReport`
(``isr load``, also ``python ingest/load_gallery.py``, is its command line).

- Streaming: one source batch at a time is read, checked, encoded and written; nothing grows
  with the gallery but the index's own structures.
- Ids come from the source (file name, image index, line number), and every write is an
  upsert, so a second run over the same source replaces documents instead of duplicating them.
- Every ``commit_every`` source items the writer commits the documents together with the
  source position reached (the index's committed meta, key "ingest"; in Elasticsearch,
  stored right after the documents it covers: :mod:`isr.plugin.es.writer`), so
  ``resume=True`` continues exactly after the last commit of a run that was killed.
- Bad items (unreadable image, wrong dims, NaN, zero norm, empty caption, bad or duplicate
  id) are skipped and counted by reason (:mod:`isr.ingest.prepare`); with ``strict=True`` the
  first one stops the run after committing what came before it. A crash never loses
  committed work.
- The index records the bundle's fingerprint when the loader creates it; loading another
  bundle into it is refused, naming both fingerprints.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from isr.encoders.eyes import check_eyes
from isr.errors import Conflict, InvalidInput
from isr.ingest.ingest_report import IngestReport, StrictStop, Tally
from isr.ingest.prepare import prepare_batch
from isr.ingest.readahead import ReadAhead
from isr.ingest.source import GallerySource, SourceBatch
from isr.plugin import CODECS, EsOptions, IndexConfig, IndexWriter, create_writer, open_writer

if TYPE_CHECKING:
    from isr.encoders.bundle import Bundle

__all__ = ["IngestOptions", "IngestReport", "StrictStop", "load_gallery"]


@dataclass(frozen=True)
class IngestOptions:
    """How to load.

    batch_size: source items read, checked and encoded at a time. commit_every: commit after
    at least this many source items (documents or skipped). resume: start after the last
    committed position of this source (else from the start, replacing what is there).
    strict: stop at the first bad item instead of skipping it. limit: stop after at least
    this many source items (whole batches). progress: show a progress bar. prefetch: read the
    next batch in a thread while this one is encoded and written.
    Used when the loader creates the index: codec, r_i (default: the bundle's top_keywords,
    else 15), max_frags (default: the bundle's, else 32), fast_storage. fingerprint: for
    pre-encoded sources, the bundle that encoded them ("" if unknown). bundle_path: the
    bundle's directory, recorded in a new index's config and in each commit (where `isr
    serve` finds the index's bundle). es: how to reach and
    lay out an Elasticsearch target (``http(s)://host:port/INDEX``; unused for a directory).
    keywords: the default keyword options a new index records (IndexConfig.keywords).
    """

    batch_size: int = 256
    commit_every: int = 10_000
    resume: bool = False
    strict: bool = False
    limit: int | None = None
    progress: bool = True
    prefetch: bool = True
    codec: str = "fp16"
    r_i: int | None = None
    max_frags: int | None = None
    fast_storage: str = "flat"
    fingerprint: str = ""
    bundle_path: str = ""
    es: EsOptions = field(default_factory=EsOptions)
    keywords: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("batch_size", "commit_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidInput(f"{_flag(name)}: expected an integer >= 1, got {v!r}")
        for name in ("limit", "r_i", "max_frags"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise InvalidInput(f"{_flag(name)}: expected an integer >= 1, got {v!r}")
        if self.codec not in CODECS:
            raise InvalidInput(f"codec {self.codec!r} is not one of {CODECS}")
        if not isinstance(self.es, EsOptions):
            raise InvalidInput(f"es: expected EsOptions, got {type(self.es).__name__}")


def _flag(name: str) -> str:
    """An option's name as `isr load` spells it (errors speak the command line's words)."""
    return "--" + name.replace("_", "-")


# -- checks before anything is read ------------------------------------------------------------


def _fp(s: str) -> str:
    return s or "none (pre-encoded features)"


def _check_target(
    config: IndexConfig, source: GallerySource, bundle: Bundle | None, fingerprint: str
) -> None:
    if config.modality != source.modality:
        raise Conflict(
            f"the index holds {config.modality} documents, this source gives {source.modality}"
        )
    if config.bundle_fingerprint != fingerprint and not config.bundle_fingerprint:
        raise Conflict(
            f"the index records no bundle (pre-encoded features); this load uses bundle "
            f"{_fp(fingerprint)}. Load into a new index, or create the index for this bundle "
            "(`isr index create PATH --bundle DIR`)"
        )
    if config.bundle_fingerprint != fingerprint:
        raise Conflict(
            f"the index was filled with bundle {_fp(config.bundle_fingerprint)}; this load uses "
            f"bundle {_fp(fingerprint)}. Mixing encoders makes scores meaningless: load into "
            "a new index, or use the bundle the index was built with"
        )
    if bundle is not None:
        diffs = [
            f"{name}: index {have}, bundle {want}"
            for name, have, want in (
                ("d_fast", config.d_fast, bundle.d_fast),
                ("d_frag", config.d_frag, bundle.d_frag),
            )
            if have != want
        ]
        if config.max_frags < bundle.max_frags:
            diffs.append(f"max_frags: index {config.max_frags} < bundle {bundle.max_frags}")
        if diffs:
            raise Conflict("the index does not fit this bundle: " + "; ".join(diffs))


def _check_source(source: GallerySource, bundle: Bundle | None) -> None:
    if source.payload in ("regions", "texts") and bundle is None:
        raise InvalidInput(
            f"a {source.describe()['kind']} source gives raw {source.payload}: it needs a "
            "bundle to encode them (--bundle)"
        )
    if (
        source.payload == "regions"
        and bundle is not None
        and source.feature_dim != bundle.image_in_dim
    ):
        raise InvalidInput(
            f"the source's region features have {source.feature_dim} dims, the bundle's "
            f"image tower takes {bundle.image_in_dim}"
        )
    if source.payload == "regions" and bundle is not None:  # same width is not same eyes
        check_eyes(bundle.eyes, getattr(source, "eyes", None))
    if source.payload == "texts" and source.modality != "text":
        raise InvalidInput("a texts source must be a text gallery")


# -- the run -----------------------------------------------------------------------------------


def _entry(progress: Mapping[str, Any], desc: dict[str, Any]) -> dict[str, Any] | None:
    """This source's record in the committed ingest progress (one record per source)."""
    for e in progress.get("sources", []):
        if isinstance(e, dict) and e.get("source") == desc:
            return e
    return None


class _Load:
    """One run: the writer, the committed progress and the tally, advanced batch by batch."""

    def __init__(
        self,
        source: GallerySource,
        target: str,
        bundle: Bundle | None,
        opt: IngestOptions,
        writer: IndexWriter | None,
    ) -> None:
        self.source, self.target, self.bundle, self.opt = source, target, bundle, opt
        self.writer = writer
        self.fingerprint = bundle.fingerprint if bundle is not None else opt.fingerprint
        self.desc = json.loads(json.dumps(source.describe()))  # as it reads back from the index
        self.progress = writer.progress() if writer is not None else {}
        self.tally = Tally()
        self.total = source.size()
        self.since_commit = 0  # source positions read since the last commit

    def commit(self, position: int) -> None:
        assert self.writer is not None
        t = time.perf_counter()
        mine = {
            "source": self.desc,
            "position": position,
            "complete": self.total is not None and position >= self.total,
            "bundle": self.fingerprint,
        }
        if self.opt.bundle_path:  # where the server finds this bundle (it may have moved)
            mine["bundle_path"] = self.opt.bundle_path
        others = [
            e
            for e in self.progress.get("sources", [])
            if not (isinstance(e, dict) and e.get("source") == self.desc)
        ]
        progress = {"sources": [*others, mine]}
        self.writer.commit(progress)
        self.progress = progress
        self.tally.timings["commit"] += time.perf_counter() - t
        self.tally.commits += 1
        self.since_commit = 0

    def write(self, batch: SourceBatch) -> str:
        """Check, encode and write one batch; returns why a strict run stops ("" to go on)."""
        c = self.writer.config if self.writer is not None else None
        t = time.perf_counter()
        got = prepare_batch(
            batch, self.bundle, c, c.max_frags if c else self.opt.max_frags or 32,
            self.opt.batch_size,
        )  # fmt: skip
        self.tally.timings["encode"] += time.perf_counter() - t
        for s in got.skipped:
            self.tally.skip(s)
        if got.skipped and self.opt.strict:
            if self.writer is not None and self.since_commit:
                self.commit(batch.start)  # keep the work before the bad batch
            return f"--strict: {got.skipped[0]}; committed up to position {batch.start}"
        if got.items is not None:
            if self.writer is None:  # pre-encoded, no index yet: its dims come from the data
                config = _new_config(
                    got.items.d_fast,
                    got.items.d_frag,
                    self.source,
                    None,
                    self.opt,
                    self.fingerprint,
                )
                self.writer = create_writer(self.target, config, self.opt.es)
            t = time.perf_counter()
            r = self.writer.upsert(got.ids, got.items, got.sources)
            self.tally.timings["index"] += time.perf_counter() - t
            self.tally.replaced += r
            self.tally.added += len(got.ids) - r
        self.since_commit += batch.end - batch.start
        if self.writer is not None and self.since_commit >= self.opt.commit_every:
            self.commit(batch.end)
        return ""

    def run(self, start: int, batches: Iterator[SourceBatch]) -> tuple[int, str]:
        """Write every batch; returns (the position reached, why a strict run stopped)."""
        pos, opt = start, self.opt
        total = None if self.total is None else self.total - start
        reader = ReadAhead(batches) if opt.prefetch else None
        with (
            reader if reader is not None else contextlib.nullcontext(),
            tqdm(total=total, unit="doc", disable=not opt.progress, mininterval=1.0,
                 dynamic_ncols=True) as bar,
        ):  # fmt: skip
            it = reader if reader is not None else batches
            while True:
                t = time.perf_counter()  # with read-ahead: the wait for the reader
                batch = next(it, None)
                self.tally.timings["read"] += time.perf_counter() - t
                if batch is None:
                    break
                assert batch.start == pos, (batch.start, pos)
                stop = self.write(batch)
                if stop:
                    return pos, stop
                pos = batch.end
                bar.update(batch.end - batch.start)
                bar.set_postfix(skipped=self.tally.skipped, refresh=False)
                if opt.limit is not None and pos - start >= opt.limit:
                    break
        if self.writer is not None and self.since_commit:
            self.commit(pos)
        return pos, ""


def load_gallery(
    source: GallerySource,
    target: str | IndexWriter,
    bundle: Bundle | None = None,
    options: IngestOptions | None = None,
) -> IngestReport:
    """Load `source` into the index at `target` (created when absent); see the module doc.

    target: an index directory or ``http(s)://host:port/INDEX``; or the writer of an index the
    caller holds open (:func:`isr.plugin.writer_for`), which the load leaves open.
    """
    opt = options or IngestOptions()
    t_start = time.perf_counter()
    _check_source(source, bundle)
    fingerprint = bundle.fingerprint if bundle is not None else opt.fingerprint
    owned = isinstance(target, str)
    if isinstance(target, str):
        writer = open_writer(target, opt.es)
    else:
        writer, target = target, target.target
    load: _Load | None = None
    try:
        if writer is not None:
            _check_target(writer.config, source, bundle, fingerprint)
        elif bundle is not None:
            config = _new_config(bundle.d_fast, bundle.d_frag, source, bundle, opt, fingerprint)
            writer = create_writer(target, config, opt.es)
        load = _Load(source, target, bundle, opt, writer)
        entry = _entry(load.progress, load.desc)
        start, note = 0, ""
        if opt.resume and entry is None:
            note = "nothing committed for this source yet: started from the beginning"
        elif opt.resume and entry is not None:
            start = int(entry["position"])
        if opt.resume and entry is not None and entry.get("complete"):
            note = "this source was already loaded completely; nothing to do"
            stop = ""
        else:
            _, stop = load.run(start, iter(source.batches(opt.batch_size, start)))
        writer = load.writer
        if writer is None:
            note = note or "no index was created: the source gave no valid item"
            stats: dict[str, Any] = {"documents": 0, "bytes_total": 0}
        else:
            stats = writer.stats()
        mine = _entry(load.progress, load.desc) or {}
        t = load.tally
        report = IngestReport(
            target=writer.target if writer is not None else str(target),  # no URL credentials
            source=load.desc,
            bundle_fingerprint=fingerprint,
            start=start,
            end=int(mine.get("position", start)),
            total=load.total,
            complete=bool(mine.get("complete", False)),
            added=t.added,
            replaced=t.replaced,
            skipped=t.skipped,
            skipped_by_reason=dict(t.by_reason),
            skip_examples=tuple(t.examples),
            commits=t.commits,
            seconds=time.perf_counter() - t_start,
            timings={k: round(v, 3) for k, v in t.timings.items()},
            documents=int(stats["documents"]),
            bytes_per_document=(
                stats["bytes_total"] / stats["documents"] if stats["documents"] else None
            ),
            resumed=opt.resume and start > 0,
            note=note,
        )
    finally:
        w = load.writer if load is not None else writer
        if w is not None and owned:
            w.close()  # drops an uncommitted tail (only after an exception)
    if stop:
        raise StrictStop(stop, report)
    return report


def _new_config(
    d_fast: int,
    d_frag: int,
    source: GallerySource,
    bundle: Bundle | None,
    opt: IngestOptions,
    fingerprint: str,
) -> IndexConfig:
    if bundle is not None:
        max_frags = opt.max_frags or bundle.max_frags
        if max_frags < bundle.max_frags:
            raise InvalidInput(
                f"max_frags {max_frags} is below the bundle's {bundle.max_frags}: its items "
                "would not fit"
            )
        r_i = opt.r_i or bundle.cfg.top_keywords
    else:
        max_frags, r_i = opt.max_frags or 32, opt.r_i or 15
    return IndexConfig(
        d_fast=d_fast,
        d_frag=d_frag,
        max_frags=max_frags,
        codec=opt.codec,
        modality=source.modality,
        r_i=r_i,
        fast_storage=opt.fast_storage,
        bundle_fingerprint=fingerprint,
        stored_fields=tuple(getattr(source, "text_fields", ())),
        keywords=opt.keywords,
        bundle_path=opt.bundle_path,
    )
