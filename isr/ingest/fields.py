"""User metadata joined onto any gallery source's `_source`, so user filters work.

Entry points: :func:`read_fields` (a CSV or JSONL file -> :class:`FieldTable`) and
:class:`WithFields` (wraps any :class:`~isr.ingest.source.GallerySource`).

The file is keyed by one column: the first of ``id``, ``path``, ``file_name``, ``filename``
present (CSV header or every JSONL object). A key matches a document by its id, its
``_source.path`` (relative path, for an image folder) or its ``_source.file_name`` /
``_source.filename``, tried in that order. CSV values stay strings except integers and
decimals, which become numbers (so ``range`` filters work); JSONL values are kept as given.
Joined fields never replace what the source itself stores (its fields win), and rows of the
file that match no document are counted, not an error: the report's note says how many.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isr.errors import InvalidInput, NotFound
from isr.ingest.source import GallerySource, SourceBatch

__all__ = ["KEY_COLUMNS", "FieldTable", "WithFields", "read_fields"]

KEY_COLUMNS = ("id", "path", "file_name", "filename")
MAX_FIELD_ROWS = 10_000_000
_INT = re.compile(r"[+-]?\d{1,18}")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def _number(v: str) -> Any:
    """A CSV cell as a number when it reads as one, else the string itself."""
    s = v.strip()
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        return float(s)
    return v


@dataclass(frozen=True)
class FieldTable:
    """key -> fields (the key column left out); `path` is the file it was read from."""

    path: Path
    key: str
    rows: Mapping[str, Mapping[str, Any]]

    def lookup(self, doc_id: str, source: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        got = self.rows.get(doc_id)
        if got is None and source is not None:
            for name in ("path", "file_name", "filename"):
                v = source.get(name)
                if isinstance(v, str) and v in self.rows:
                    return self.rows[v]
        return got


def _key_of(names: list[str], where: str) -> str:
    for k in KEY_COLUMNS:
        if k in names:
            return k
    raise InvalidInput(
        f"{where}: no key column; name one of {', '.join(KEY_COLUMNS)} (have {names[:8]})"
    )


def read_fields(path: str | Path) -> FieldTable:
    """Read a .csv (header row) or .jsonl (one object per line) metadata file."""
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"fields file not found: {path}")
    rows: dict[str, dict[str, Any]] = {}
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            names = list(reader.fieldnames or [])
            key = _key_of(names, str(path))
            try:
                for line, rec in enumerate(reader, start=2):
                    if None in rec:
                        raise InvalidInput(f"{path}: line {line} has more cells than the header")
                    _put(rows, rec.get(key), {k: _number(v) for k, v in rec.items() if k != key
                                              and v is not None and v != ""}, path, line)  # fmt: skip
            except (UnicodeDecodeError, csv.Error) as e:
                raise InvalidInput(f"{path}: not a readable UTF-8 CSV file ({e})") from e
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        key = ""
        try:
            with path.open(encoding="utf-8") as f:
                for line, text in enumerate(f, start=1):
                    if not text.strip():
                        continue
                    try:
                        rec = json.loads(text)
                    except json.JSONDecodeError as e:
                        raise InvalidInput(f"{path}: line {line} is not JSON ({e})") from e
                    if not isinstance(rec, dict):
                        raise InvalidInput(f"{path}: line {line} is not a JSON object")
                    key = key or _key_of(list(rec), f"{path}: line {line}")
                    _put(rows, rec.get(key), {k: v for k, v in rec.items() if k != key},
                         path, line)  # fmt: skip
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{path}: not UTF-8 ({e})") from e
        if not key:
            raise InvalidInput(f"{path}: no records")
    else:
        raise InvalidInput(f"fields file {path}: expected a .csv or .jsonl file")
    return FieldTable(path, key, rows)


def _put(
    rows: dict[str, dict[str, Any]], k: Any, rec: dict[str, Any], path: Path, line: int
) -> None:
    if not isinstance(k, (str, int)) or isinstance(k, bool) or str(k) == "":
        raise InvalidInput(f"{path}: line {line} has no key value")
    if str(k) in rows:
        raise InvalidInput(f"{path}: line {line}: key {str(k)!r} appears twice")
    if len(rows) >= MAX_FIELD_ROWS:
        raise InvalidInput(f"{path}: more than {MAX_FIELD_ROWS} rows")
    rows[str(k)] = rec


class WithFields:
    """A source whose `_source` objects carry the matching rows of a :class:`FieldTable`."""

    def __init__(self, inner: GallerySource, table: FieldTable) -> None:
        self.inner = inner
        self.table = table
        self.matched: set[str] = set()

    def __getattr__(self, name: str) -> Any:  # modality, payload, text_fields, eyes, ...
        return getattr(self.inner, name)

    @property
    def modality(self) -> str:
        return self.inner.modality

    @property
    def payload(self) -> str:
        return self.inner.payload

    @property
    def feature_dim(self) -> int | None:
        return self.inner.feature_dim

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "fields": str(self.table.path.resolve())}

    def size(self) -> int | None:
        return self.inner.size()

    def unmatched(self) -> int:
        """Rows of the file no document matched so far."""
        return len(self.table.rows) - len(self.matched)

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        for b in self.inner.batches(batch_size, start):
            srcs = []
            for doc_id, src in zip(b.ids, b.sources, strict=True):
                extra = self.table.lookup(doc_id, src)
                if extra is None:
                    srcs.append(src)
                    continue
                self.matched.add(_matched_key(self.table, doc_id, src))
                srcs.append({**extra, **(src or {})})  # the source's own fields win
            yield SourceBatch(b.start, b.end, b.ids, b.positions, b.payload, tuple(srcs),
                              b.skipped)  # fmt: skip


def _matched_key(t: FieldTable, doc_id: str, src: Mapping[str, Any] | None) -> str:
    if doc_id in t.rows:
        return doc_id
    for name in ("path", "file_name", "filename"):
        v = (src or {}).get(name)
        if isinstance(v, str) and v in t.rows:
            return v
    return doc_id
