"""TREC run files and qrels: the one writer of both formats.

Entry points: :func:`write_run` and :func:`write_qrels` (:func:`format_run` and
:func:`format_qrels` give the text). A run line is ``qid Q0 docid rank score tag``, ranks from 1;
a qrels line is ``qid 0 docid relevance``. Queries and documents keep the order they are given in.

trec_eval ranks a query's documents by score, not by the rank column, so a run whose scores
rise somewhere down the list would be scored in another order than the one it was written in:
the writer refuses it. Scores are written with ``repr`` (the shortest text that reads back as
the same float), so no two distinct scores collapse into a tie. Documents with *equal* scores
(duplicate captions, say) are written in the order given, but trec_eval orders them by docid,
descending: the TREC convention, and no less arbitrary than the engine's own order of ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from isr.errors import InvalidInput

__all__ = ["Qrels", "Run", "format_qrels", "format_run", "write_qrels", "write_run"]

Run = Mapping[str, Sequence[tuple[str, float]]]  # qid -> [(docid, score)], best first
Qrels = Mapping[str, Mapping[str, int]]  # qid -> {docid: relevance}


def _token(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise InvalidInput(f"{what}: expected a non-empty string without whitespace, got {value!r}")
    return value


def format_run(run: Run, tag: str) -> str:
    """The text of a run file; every query's list must be ranked by non-increasing score."""
    _token("tag", tag)
    lines = []
    for qid, ranked in run.items():
        _token("qid", qid)
        seen: set[str] = set()
        prev = math.inf
        for rank, (docid, score) in enumerate(ranked, start=1):
            _token(f"query {qid!r}: docid", docid)
            if docid in seen:
                raise InvalidInput(f"query {qid!r}: document {docid!r} is ranked twice")
            seen.add(docid)
            s = float(score)
            if not math.isfinite(s):
                raise InvalidInput(f"query {qid!r}: document {docid!r} has score {s}")
            if s > prev:
                raise InvalidInput(
                    f"query {qid!r}: score {s!r} at rank {rank} exceeds {prev!r} at rank "
                    f"{rank - 1}; trec_eval would re-sort by score, so pass the list best first"
                )
            prev = s
            lines.append(f"{qid} Q0 {docid} {rank} {s!r} {tag}\n")
    return "".join(lines)


def format_qrels(qrels: Qrels) -> str:
    """The text of a qrels file."""
    lines = []
    for qid, docs in qrels.items():
        _token("qid", qid)
        for docid, rel in docs.items():
            _token(f"query {qid!r}: docid", docid)
            if isinstance(rel, bool) or not isinstance(rel, int) or rel < 0:
                raise InvalidInput(
                    f"query {qid!r}, document {docid!r}: relevance must be an integer >= 0, "
                    f"got {rel!r}"
                )
            lines.append(f"{qid} 0 {docid} {rel}\n")
    return "".join(lines)


def write_run(path: Path, run: Run, tag: str) -> Path:
    """Write a run file (parent folders created); returns ``path``."""
    return _write(Path(path), format_run(run, tag))


def write_qrels(path: Path, qrels: Qrels) -> Path:
    """Write a qrels file (parent folders created); returns ``path``."""
    return _write(Path(path), format_qrels(qrels))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
