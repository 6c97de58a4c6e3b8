"""Check one source batch against the index, drop its bad items, encode the rest.

Entry point: :func:`prepare_batch(batch, bundle, config, ...) -> Prepared`. Each bad item
becomes a :class:`~isr.ingest.source.Skip` with a short reason: a bad or duplicate id, a
`_source` that is not JSON, NaN / inf or missing region features, pre-encoded vectors of the
wrong dimension, NaN, zero norm, no or too many fragments; an item the bundle still refuses is
found by encoding the batch item by item ("encoding failed").
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from isr.encoders.record import Encoded, Keywords, squared_norms
from isr.errors import InvalidInput
from isr.ingest.source import EncodedRows, Payload, Regions, Skip, SourceBatch, Texts
from isr.plugin import IndexConfig, id_problem

if TYPE_CHECKING:
    from isr.encoders.bundle import Bundle

__all__ = ["Prepared", "prepare_batch"]


@dataclass(frozen=True)
class Prepared:
    """The writable part of a batch (items None when nothing is left) and what was dropped."""

    ids: list[str]
    items: Encoded | None
    sources: list[Mapping[str, Any] | None]
    skipped: list[Skip]


def _check_ids(batch: SourceBatch) -> tuple[np.ndarray, list[Skip]]:
    """keep (n,) bool: items with a usable id seen first in the batch and a JSON _source."""
    keep = np.zeros(len(batch.ids), dtype=bool)
    skips: list[Skip] = []
    seen: dict[str, int] = {}
    for i, (doc_id, pos, src) in enumerate(zip(batch.ids, batch.positions, batch.sources)):
        why = id_problem(doc_id)
        if why:
            skips.append(Skip(pos, str(doc_id)[:80], "bad id", why))
            continue
        if doc_id in seen:
            skips.append(Skip(pos, doc_id, "duplicate id", f"first at position {seen[doc_id]}"))
            continue
        seen[doc_id] = pos
        if src is not None:
            try:
                json.dumps(src, allow_nan=False)
            except (TypeError, ValueError) as e:
                skips.append(Skip(pos, doc_id, "bad _source", str(e)))
                continue
        keep[i] = True
    return keep, skips


def _check_regions(r: Regions) -> tuple[np.ndarray, list[str]]:
    feats = np.asarray(r.feats)  # (b, m, D)
    mask = np.ones(feats.shape[:2], bool) if r.mask is None else np.asarray(r.mask, bool)
    finite: np.ndarray = (np.isfinite(feats).all(2) | ~mask).all(1)  # (b,)
    real = np.asarray(mask.any(1))  # (b,)
    why = [
        "" if f and r else ("no regions" if not r else "NaN or inf features")
        for f, r in zip(finite.tolist(), real.tolist())
    ]
    return finite & real, why


@dataclass(frozen=True)
class _Packed:
    """Pre-encoded rows packed into arrays (items with unusable shapes left as zeros)."""

    fast: np.ndarray  # (n, d_fast)
    fragments: np.ndarray  # (n, n_max, d)
    mask: np.ndarray  # (n, n_max)
    keywords: tuple[Keywords, ...]

    def __len__(self) -> int:
        return int(self.fast.shape[0])

    def take(self, keep: np.ndarray) -> _Packed:
        idx = np.flatnonzero(keep)
        kws = tuple(self.keywords[i] for i in idx)
        return _Packed(self.fast[idx], self.fragments[idx], self.mask[idx], kws)


def _pack_rows(
    rows: EncodedRows, dims: tuple[int, int], max_frags: int
) -> tuple[_Packed, np.ndarray, list[str], list[str]]:
    """Pack the rows that fit the index and check their values, all items at once: packed,
    ok (n,) bool, and the reason and detail of each item that is not ok."""
    d_fast, d_frag = dims
    n = len(rows)
    why, detail = [""] * n, [""] * n
    counts = [fr.shape[0] for fr in rows.fragments]
    for i, (f, fr) in enumerate(zip(rows.fast, rows.fragments)):
        if f.shape[0] != d_fast or (fr.shape[0] and fr.shape[1] != d_frag):
            why[i] = "wrong dimension"
            detail[i] = (
                f"fast {f.shape[0]}, fragments {fr.shape[1]}; the index takes {d_fast}, {d_frag}"
            )
        elif fr.shape[0] == 0:
            why[i] = "no fragments"
        elif fr.shape[0] > max_frags:
            why[i] = "too many fragments"
            detail[i] = f"{fr.shape[0]} > the index's max_frags {max_frags}"
    shaped = [i for i in range(n) if not why[i]]
    n_max = max([counts[i] for i in shaped], default=1)
    fast = np.zeros((n, d_fast), np.float32)  # (n, d_fast)
    frags = np.zeros((n, n_max, d_frag), np.float32)  # (n, n_max, d)
    mask = np.zeros((n, n_max), bool)
    for i in shaped:
        fast[i] = rows.fast[i]
        frags[i, : counts[i]] = rows.fragments[i]
        mask[i, : counts[i]] = True
    # one pass each for both checks, as Encoded itself makes them
    sq_fast, fin_fast = squared_norms(fast)  # (n,), (n,)
    sq_frag, fin_frag = squared_norms(frags)  # (n, n_max), (n, n_max)
    finite = fin_fast & (fin_frag | ~mask).all(1)  # (n,)
    with np.errstate(invalid="ignore"):
        norms_ok = (sq_fast > 0) & ((sq_frag > 0) | ~mask).all(1)  # (n,)
    finite, norms_ok = np.asarray(finite), np.asarray(norms_ok)
    for i in shaped:
        if not finite[i]:
            why[i] = "NaN or inf"
        elif not norms_ok[i]:
            why[i] = "zero norm"
    ok = np.array([not w for w in why], dtype=bool)
    return _Packed(fast, frags, mask, rows.keywords), ok, why, detail


def _take(p: Payload | _Packed, keep: np.ndarray) -> Payload | _Packed:
    if keep.all():
        return p  # the usual batch: no copy, and no second validation of an Encoded
    if isinstance(p, Encoded):
        idx = np.flatnonzero(keep)
        return Encoded(
            p.fast[idx], p.fragments[idx], p.mask[idx], tuple(p.keywords[i] for i in idx)
        )
    return p.take(keep)


def _majority_dims(rows: EncodedRows) -> tuple[int, int] | None:
    """The (d_fast, d_frag) most items of the first batch share: the dims of a new index."""
    dims = Counter(
        (int(f.shape[0]), int(fr.shape[1]))
        for f, fr in zip(rows.fast, rows.fragments)
        if fr.shape[0]
    )
    return dims.most_common(1)[0][0] if dims else None


def _encode_each(
    encode: Callable[[Payload | _Packed], Encoded], payload: Payload | _Packed, n: int
) -> tuple[list[Encoded], list[tuple[int, str]]]:
    """Encode item by item (after a batch failed): the good ones, and (index, error) of the rest."""
    good: list[Encoded] = []
    bad: list[tuple[int, str]] = []
    for i in range(n):
        one = np.zeros(n, dtype=bool)
        one[i] = True
        try:
            good.append(encode(_take(payload, one)))
        except InvalidInput as e:
            bad.append((i, str(e)))
    return good, bad


def _check_payload(
    payload: Payload, keep: np.ndarray, config: IndexConfig | None, max_frags: int
) -> tuple[Payload | _Packed, np.ndarray, list[str], list[str]]:
    """The payload to encode (pre-encoded rows come back packed), ok (n,) bool, and the reason
    and detail of each item that is not ok."""
    n = len(payload)
    details = [""] * n
    if isinstance(payload, Regions):
        ok, reasons = _check_regions(payload)
    elif isinstance(payload, EncodedRows):
        if config is not None:
            dims = (config.d_fast, config.d_frag)
        else:  # a new index takes the dims most of its first items have
            dims = _majority_dims(payload.take(keep)) or (0, 0)
        packed, ok, reasons, details = _pack_rows(payload, dims, max_frags)
        return packed, ok, reasons, details
    elif isinstance(payload, Encoded):
        fits = config is None or (payload.d_fast, payload.d_frag) == (config.d_fast, config.d_frag)
        few = payload.mask.sum(1) <= max_frags  # (n,)
        ok = few & fits
        reasons = [
            "" if k else ("too many fragments" if fits else "wrong dimension") for k in ok.tolist()
        ]
    else:  # Texts: empty captions are the source's to report; guard anyway
        ok = np.array([bool(t.strip()) for t in payload.texts], dtype=bool)
        reasons = ["" if k else "empty caption" for k in ok.tolist()]
    return payload, ok, reasons, details


def prepare_batch(
    batch: SourceBatch,
    bundle: Bundle | None,
    config: IndexConfig | None,
    max_frags: int,
    batch_size: int,
) -> Prepared:
    """Check a batch against the index `config` (None: not created yet, `max_frags` then
    bounds the fragments), drop its bad items, encode the rest with the bundle."""
    skips = list(batch.skipped)
    keep, id_skips = _check_ids(batch)
    skips += id_skips
    payload, ok, reasons, details = _check_payload(batch.payload, keep, config, max_frags)
    for i in np.flatnonzero(keep & ~ok).tolist():
        skips.append(Skip(batch.positions[i], batch.ids[i], reasons[i], details[i]))
    keep &= ok
    idx = np.flatnonzero(keep).tolist()
    if not idx:
        return Prepared([], None, [], skips)
    ids = [batch.ids[i] for i in idx]
    srcs = [batch.sources[i] for i in idx]
    part = _take(payload, keep)

    def encode(p: Payload | _Packed) -> Encoded:
        if isinstance(p, Encoded):
            return p
        if isinstance(p, _Packed):
            return Encoded(p.fast, p.fragments, p.mask, p.keywords)
        assert not isinstance(p, EncodedRows)  # packed by _check_payload
        assert bundle is not None
        if isinstance(p, Texts):
            return bundle.encode_texts(list(p.texts), batch_size=batch_size)
        return bundle.encode_images(p.feats, p.mask, batch_size=batch_size)

    items: Encoded | None
    try:
        items = encode(part)
    except InvalidInput:
        good, bad = _encode_each(encode, part, len(idx))
        drop = {i for i, _ in bad}
        for i, err in bad:
            skips.append(Skip(batch.positions[idx[i]], ids[i], "encoding failed", err))
        ids = [x for i, x in enumerate(ids) if i not in drop]
        srcs = [x for i, x in enumerate(srcs) if i not in drop]
        items = Encoded.concat(good) if good else None
    return Prepared(ids, items, srcs, skips)
