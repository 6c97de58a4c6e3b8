"""Gallery source over a captions file: a *text* gallery, one document per caption, for
image -> text search.

Entry point: :class:`CaptionSource`. Two layouts:

- ``lines``: one caption per line (SCAN's ``{split}_caps.txt``). Id: the line number from 0,
  or ``{image}#{k}`` with ``per_image`` (5 for SCAN: line l is caption l % 5 of image l // 5).
- ``tsv``: ``id<TAB>caption`` per line (Flickr30K's ``results_20130124.token``:
  ``1000092795.jpg#0<TAB>Two young guys ...``). Id: the first column.

``_source``: ``{"text": caption}``, plus ``"image"`` when the id names one (``image#k``).
The file is read line by line, never whole; a position is a line number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from isr.errors import InvalidInput, NotFound
from isr.ingest.source import Skip, SourceBatch, Texts, check_start

__all__ = ["FORMATS", "CaptionSource", "count_lines"]

FORMATS = ("lines", "tsv")
_IMAGE_K = re.compile(r"^(.+)#(\d+)$")


def count_lines(path: Path) -> int:
    """Lines in a file; a last line without its newline counts, a final newline adds none."""
    n, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


class CaptionSource:
    """Captions as documents; blank lines and undecodable lines are skipped and reported."""

    modality = "text"
    text_fields = ("text",)
    payload = "texts"
    feature_dim = None

    def __init__(
        self,
        path: str | Path,
        fmt: str = "lines",
        per_image: int | None = None,
        id_prefix: str = "",
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFound(f"captions file not found: {self.path}")
        if fmt not in FORMATS:
            raise InvalidInput(f"captions format {fmt!r} is not one of {FORMATS}")
        if per_image is not None and (fmt != "lines" or per_image < 1):
            raise InvalidInput(
                f"per_image={per_image!r}: only for the 'lines' format, and an integer >= 1"
            )
        self.fmt = fmt
        self.per_image = per_image
        self.id_prefix = id_prefix
        self._size: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "captions",
            "path": str(self.path.resolve()),
            "format": self.fmt,
            "per_image": self.per_image,
            "id_prefix": self.id_prefix,
        }

    def size(self) -> int:
        if self._size is None:
            self._size = count_lines(self.path)
        return self._size

    def _parse(self, line_no: int, raw: bytes) -> tuple[str, str, dict[str, Any]] | Skip:
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            return Skip(line_no, "", "not UTF-8", e.reason)
        if self.fmt == "tsv":
            doc_id, tab, text = line.partition("\t")
            if not tab or not doc_id.strip():
                return Skip(line_no, "", "malformed line", "expected 'id<TAB>caption'")
            doc_id = doc_id.strip()
        elif self.per_image:
            doc_id = f"{line_no // self.per_image}#{line_no % self.per_image}"
            text = line
        else:
            doc_id, text = str(line_no), line
        doc_id = self.id_prefix + doc_id
        if not text.strip():
            return Skip(line_no, doc_id, "empty caption")
        src: dict[str, Any] = {"text": text}
        m = _IMAGE_K.match(doc_id)
        if m:
            src["image"] = m.group(1)
        return doc_id, text, src

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        check_start(batch_size, start, self.size())
        ids: list[str] = []
        pos: list[int] = []
        texts: list[str] = []
        srcs: list[Mapping[str, Any] | None] = []
        skipped: list[Skip] = []
        first = start
        with self.path.open("rb") as f:
            for line_no, raw in enumerate(f):
                if line_no < start:
                    continue
                got = self._parse(line_no, raw)
                if isinstance(got, Skip):
                    skipped.append(got)
                else:
                    ids.append(got[0])
                    texts.append(got[1])
                    srcs.append(got[2])
                    pos.append(line_no)
                if line_no + 1 - first == batch_size:
                    yield SourceBatch(
                        first, line_no + 1, tuple(ids), tuple(pos), Texts(tuple(texts)),
                        tuple(srcs), tuple(skipped),
                    )  # fmt: skip
                    ids, pos, texts, srcs, skipped = [], [], [], [], []
                    first = line_no + 1
        end = first + len(ids) + len(skipped)
        if end > first:
            yield SourceBatch(
                first, end, tuple(ids), tuple(pos), Texts(tuple(texts)), tuple(srcs),
                tuple(skipped),
            )  # fmt: skip
