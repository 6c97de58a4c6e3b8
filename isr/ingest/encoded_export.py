"""Export encoded items in the formats :class:`~isr.ingest.encoded_file.EncodedFileSource` reads.

Entry points: :func:`write_jsonl` and :class:`ParquetWriter` / :func:`write_parquet`, for users
who encode a gallery on one machine and index it on another, and for tests and benchmarks.
Only real fragments are written (the mask drops padding).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from isr.encoders.record import Encoded
from isr.errors import InvalidInput
from isr.ingest.encoded_file import pyarrow_modules

__all__ = ["ParquetWriter", "write_jsonl", "write_parquet"]


def _records(
    ids: Sequence[str], items: Encoded, sources: Sequence[Mapping[str, Any] | None] | None
) -> Iterator[dict[str, Any]]:
    if len(ids) != len(items):
        raise InvalidInput(f"{len(ids)} ids for {len(items)} items")
    srcs = sources if sources is not None else [None] * len(items)
    for i, doc_id in enumerate(ids):
        m = items.mask[i]
        rec: dict[str, Any] = {
            "id": doc_id,
            "fast": items.fast[i],
            "fragments": items.fragments[i][m],  # (n_i, d) real fragments only
            "keywords": list(items.keywords[i].labels),
            "keyword_probs": list(items.keywords[i].probs),
        }
        if srcs[i] is not None:
            rec["_source"] = dict(srcs[i] or {})
        yield rec


def write_jsonl(
    path: str | Path,
    ids: Sequence[str],
    items: Encoded,
    sources: Sequence[Mapping[str, Any] | None] | None = None,
    append: bool = False,
) -> None:
    """Write (or append) one JSON record per item."""
    with Path(path).open("a" if append else "w", encoding="utf-8") as f:
        for rec in _records(ids, items, sources):
            rec["fast"] = rec["fast"].tolist()
            rec["fragments"] = rec["fragments"].tolist()
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


class ParquetWriter:
    """Append :class:`Encoded` batches to a Parquet file, one row group per batch."""

    def __init__(self, path: str | Path, d_fast: int, d_frag: int) -> None:
        pa, pq = pyarrow_modules()
        self._pa = pa
        self.d_frag = d_frag
        self.schema = pa.schema(
            [
                ("id", pa.string()),
                ("fast", pa.list_(pa.float32(), d_fast)),
                ("fragments", pa.list_(pa.list_(pa.float32(), d_frag))),
                ("keywords", pa.list_(pa.string())),
                ("keyword_probs", pa.list_(pa.float32())),
                ("_source", pa.string()),
            ]
        )
        self._w = pq.ParquetWriter(str(path), self.schema)

    def write(
        self,
        ids: Sequence[str],
        items: Encoded,
        sources: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        pa = self._pa
        n = len(items)
        if len(ids) != n:
            raise InvalidInput(f"{len(ids)} ids for {n} items")
        counts = items.mask.sum(1)  # (B,)
        # Real fragments first (encoders emit them first; the mask says which).
        order = np.argsort(~items.mask, axis=1, kind="stable")  # (B, n)
        packed = np.take_along_axis(items.fragments, order[..., None], axis=1)  # (B, n, d)
        flat = np.concatenate([packed[i, : counts[i]] for i in range(n)]) if n else packed[:0, 0]
        vecs = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), self.d_frag)
        offs = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        srcs = sources if sources is not None else [None] * n
        table = pa.table(
            {
                "id": pa.array(list(ids), pa.string()),
                "fast": pa.FixedSizeListArray.from_arrays(
                    pa.array(items.fast.reshape(-1)), items.d_fast
                ),
                "fragments": pa.ListArray.from_arrays(offs, vecs),
                "keywords": pa.array([list(k.labels) for k in items.keywords]),
                "keyword_probs": pa.array(
                    [list(k.probs) for k in items.keywords], pa.list_(pa.float32())
                ),
                "_source": pa.array(
                    [None if s is None else json.dumps(dict(s)) for s in srcs], pa.string()
                ),
            },
            schema=self.schema,
        )
        self._w.write_table(table)

    def close(self) -> None:
        self._w.close()

    def __enter__(self) -> ParquetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_parquet(
    path: str | Path,
    batches: Iterator[tuple[Sequence[str], Encoded, Sequence[Mapping[str, Any] | None] | None]],
) -> int:
    """Write batches of (ids, items, sources) to a Parquet file; returns the item count."""
    n = 0
    w: ParquetWriter | None = None
    try:
        for ids, items, srcs in batches:
            if w is None:
                w = ParquetWriter(path, items.d_fast, items.d_frag)
            w.write(ids, items, srcs)
            n += len(items)
    finally:
        if w is not None:
            w.close()
    if w is None:
        raise InvalidInput("write_parquet: no batches to write")
    return n
