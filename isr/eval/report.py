"""Tables for people: one Markdown table writer used by the CLI, the demo and the benchmarks.

Entry point: :func:`markdown_table`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["fmt", "markdown_table"]


def fmt(v: Any, digits: int = 2) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned, floats with `digits` decimals."""
    cells = [[fmt(v, digits) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)
        )
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])
