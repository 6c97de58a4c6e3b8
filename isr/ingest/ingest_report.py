"""What one ingest run did: the report, its summary, and the running tally behind it.

Entry points: :class:`IngestReport` (``summary()`` for people, ``to_json()`` for tools),
:class:`Tally` (the counters a run keeps; nothing in it grows with the gallery) and
:class:`StrictStop` (the error a ``strict`` run stops with, carrying the report so far).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from isr.errors import InvalidInput
from isr.ingest.source import Skip

__all__ = ["MAX_EXAMPLES", "IngestReport", "StrictStop", "Tally"]

MAX_EXAMPLES = 20  # skipped items listed by name in the report; the rest are only counted


@dataclass(frozen=True)
class IngestReport:
    """What one run did. Positions are source positions; `end` is the last one committed."""

    target: str
    source: dict[str, Any]
    bundle_fingerprint: str
    start: int
    end: int
    total: int | None
    complete: bool
    added: int
    replaced: int
    skipped: int
    skipped_by_reason: dict[str, int]
    skip_examples: tuple[Skip, ...]
    commits: int
    seconds: float
    timings: dict[str, float]
    documents: int
    bytes_per_document: float | None
    resumed: bool
    note: str = ""

    @property
    def loaded(self) -> int:
        return self.added + self.replaced

    @property
    def docs_per_s(self) -> float:
        return self.loaded / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["skip_examples"] = [asdict(s) for s in self.skip_examples]
        out["loaded"], out["docs_per_s"] = self.loaded, round(self.docs_per_s, 1)
        return out

    def summary(self) -> str:
        src = " ".join(f"{k}={v}" for k, v in self.source.items() if v not in (None, ""))
        lines = [
            f"loaded {self.loaded:,} documents ({self.added:,} new, {self.replaced:,} replaced) "
            f"into {self.target} in {self.seconds:.1f} s ({self.docs_per_s:,.0f} docs/s)",
            f"source: {src}",
            f"positions {self.start:,} -> {self.end:,}"
            + (f" of {self.total:,}" if self.total is not None else "")
            + (" (complete)" if self.complete else " (not complete: run again with --resume)")
            + (" [resumed]" if self.resumed else ""),
        ]
        if self.skipped:
            why = ", ".join(f"{n:,} {r}" for r, n in sorted(self.skipped_by_reason.items()))
            lines.append(f"skipped {self.skipped:,}: {why}")
            lines += [f"  {s}" for s in self.skip_examples]
            if self.skipped > len(self.skip_examples):
                lines.append(f"  ... and {self.skipped - len(self.skip_examples):,} more")
        else:
            lines.append("skipped 0")
        bpd = f"{self.bytes_per_document:,.0f}" if self.bytes_per_document else "-"
        lines.append(
            f"index: {self.documents:,} documents, {bpd} bytes per document, "
            f"{self.commits} commits, bundle {self.bundle_fingerprint or 'none'}"
        )
        lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items()))
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)


class StrictStop(InvalidInput):
    """A bad item stopped a strict run; `report` says what was committed before it."""

    def __init__(self, message: str, report: IngestReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Tally:
    """Counters of one run (nothing here grows with the gallery)."""

    added: int = 0
    replaced: int = 0
    skipped: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    examples: list[Skip] = field(default_factory=list)
    commits: int = 0
    timings: dict[str, float] = field(
        default_factory=lambda: {"read": 0.0, "encode": 0.0, "index": 0.0, "commit": 0.0}
    )

    def skip(self, s: Skip) -> None:
        self.skipped += 1
        self.by_reason[s.reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(s)
