"""trec_eval (pyserini's bundled jar) against a second implementation (ir_measures) on a run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from isr.errors import InvalidInput, NotFound
from isr.eval.trec_io import write_qrels, write_run
from isr.eval.trec_measures import java_env, trec_eval, trec_eval_jar

ir_measures = pytest.importorskip("ir_measures", reason="ir_measures (the isr[eval] extra) absent")


def _java_problem() -> str:
    try:
        trec_eval_jar()
        done = subprocess.run(["java", "-version"], env=java_env(), capture_output=True)
    except (NotFound, OSError) as e:
        return str(e)
    return "" if done.returncode == 0 else done.stderr.decode(errors="replace")[-300:]


JAVA_PROBLEM = _java_problem()
needs_java = pytest.mark.skipif(bool(JAVA_PROBLEM), reason=f"Java cannot start: {JAVA_PROBLEM}")


def seeded_run(seed: int = 3, n_q: int = 40, n_docs: int = 60, depth: int = 20):
    """Queries with 1-5 relevant documents, some ranked, some beyond the depth, some never."""
    rng = np.random.default_rng(seed)
    qrels, run = {}, {}
    for q in range(n_q):
        rel = rng.choice(n_docs, size=int(rng.integers(1, 6)), replace=False)
        qrels[f"q{q}"] = {f"d{d}": 1 for d in rel.tolist()}
        ranked = rng.permutation(n_docs)[:depth]
        scores = np.sort(rng.normal(size=depth))[::-1]  # distinct, best first
        run[f"q{q}"] = [(f"d{d}", float(s)) for d, s in zip(ranked.tolist(), scores.tolist())]
    return qrels, run


MEASURES = {
    "recall.1": "R@1", "recall.5": "R@5", "recall.10": "R@10",
    "success.1": "Success@1", "success.5": "Success@5", "success.10": "Success@10",
    "recip_rank": "RR", "ndcg_cut.10": "nDCG@10",
}  # fmt: skip


@needs_java
def test_trec_eval_agrees_with_ir_measures(tmp_path: Path) -> None:
    qrels, run = seeded_run()
    qf = write_qrels(tmp_path / "t.qrels", qrels)
    rf = write_run(tmp_path / "t.trec", run, "seeded")
    got = trec_eval(qf, rf, list(MEASURES))
    other = ir_measures.calc_aggregate(
        [ir_measures.parse_measure(m) for m in MEASURES.values()],
        list(ir_measures.read_trec_qrels(str(qf))),
        list(ir_measures.read_trec_run(str(rf))),
    )
    other = {str(k): v for k, v in other.items()}
    for te, im in MEASURES.items():
        # trec_eval prints 4 decimals
        assert got[te] == pytest.approx(other[im], abs=6e-5), (te, got[te], other[im])
    # and by hand, for the two the tables lean on
    for k in (1, 10):
        hits = [sum(d in qrels[q] for d, _ in run[q][:k]) for q in run]
        recall = np.mean([h / len(qrels[q]) for h, q in zip(hits, run)])
        success = np.mean([h > 0 for h in hits])
        assert got[f"recall.{k}"] == pytest.approx(recall, abs=6e-5)
        assert got[f"success.{k}"] == pytest.approx(success, abs=6e-5)
    assert 0 < got["recall.10"] < 1 and got["success.1"] < got["success.10"]


@needs_java
def test_a_query_missing_from_the_run_counts_as_zero(tmp_path: Path) -> None:
    qf = write_qrels(tmp_path / "q", {"a": {"x": 1}, "b": {"y": 1}})
    rf = write_run(tmp_path / "r", {"a": [("x", 1.0)]}, "t")
    assert trec_eval(qf, rf, ["success.1", "recip_rank"]) == {"success.1": 0.5, "recip_rank": 0.5}


def test_bad_measure_lists_are_refused(tmp_path: Path) -> None:
    for bad in ([], "recall.1", ["recall.1,5"], ["recall 1"]):
        with pytest.raises(InvalidInput):
            trec_eval(tmp_path / "q", tmp_path / "r", bad)
    with pytest.raises(NotFound, match="qrels"):
        trec_eval(tmp_path / "missing", tmp_path / "r", ["recall.1"])
