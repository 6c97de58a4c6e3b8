"""The TREC run-file and qrels writer: exact text, and the runs trec_eval would misread."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from isr.errors import InvalidInput
from isr.eval.trec_io import format_qrels, format_run, write_qrels, write_run


def test_run_text_is_exact(tmp_path: Path) -> None:
    run = {"0#1": [("7", 2.5), ("3", 0.1 + 0.2), ("12", -1.0)], "5#0": [("5", 1.0)]}
    want = (
        "0#1 Q0 7 1 2.5 full\n"
        "0#1 Q0 3 2 0.30000000000000004 full\n"  # repr: reads back as the same float
        "0#1 Q0 12 3 -1.0 full\n"
        "5#0 Q0 5 1 1.0 full\n"
    )
    assert format_run(run, "full") == want
    path = write_run(tmp_path / "runs" / "t2i" / "full.trec", run, "full")
    assert path.read_text() == want


def test_equal_scores_keep_the_given_order() -> None:
    assert format_run({"q": [("b", 1.0), ("a", 1.0)]}, "t") == "q Q0 b 1 1.0 t\nq Q0 a 2 1.0 t\n"


def test_qrels_text_is_exact(tmp_path: Path) -> None:
    qrels = {"0": {"0#0": 1, "0#1": 1}, "1#4": {"1": 1}, "2": {"9": 0}}
    want = "0 0 0#0 1\n0 0 0#1 1\n1#4 0 1 1\n2 0 9 0\n"
    assert format_qrels(qrels) == want
    assert write_qrels(tmp_path / "q" / "t2i.qrels", qrels).read_text() == want


def test_empty_run_and_query() -> None:
    assert format_run({}, "t") == ""
    assert format_run({"q": []}, "t") == ""


@pytest.mark.parametrize(
    ("run", "tag", "needle"),
    [
        ({"q": [("a", 1.0), ("b", 2.0)]}, "t", "exceeds"),
        ({"q": [("a", 1.0), ("a", 0.5)]}, "t", "ranked twice"),
        ({"q": [("a", math.nan)]}, "t", "score nan"),
        ({"q": [("a", math.inf)]}, "t", "score inf"),
        ({"q 1": [("a", 1.0)]}, "t", "qid"),
        ({"q": [("a b", 1.0)]}, "t", "docid"),
        ({"q": [("", 1.0)]}, "t", "docid"),
        ({"q": [("a", 1.0)]}, "my tag", "tag"),
        ({"q": [("a", 1.0)]}, "", "tag"),
    ],
)
def test_run_refuses_what_trec_eval_would_misread(run, tag, needle) -> None:
    with pytest.raises(InvalidInput, match=needle):
        format_run(run, tag)


@pytest.mark.parametrize(
    ("qrels", "needle"),
    [
        ({"q": {"a": -1}}, "relevance"),
        ({"q": {"a": 1.0}}, "relevance"),
        ({"q": {"a": True}}, "relevance"),
        ({"q\t": {"a": 1}}, "qid"),
        ({"q": {"a\n": 1}}, "docid"),
    ],
)
def test_qrels_refuses_bad_entries(qrels, needle) -> None:
    with pytest.raises(InvalidInput, match=needle):
        format_qrels(qrels)
