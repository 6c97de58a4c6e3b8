"""The README as a test: every shell command (and Python snippet) of README.md and
docker/README.md that can run here runs, in the documents' order, in one fresh directory,
against the gallery the README's own commands build (`isr world`, `isr train --preset tiny`,
`isr load`, ...). Exit status 0 is not the only check: the filter example must return only
`cc-by` documents, the read APIs the gallery's count, the searches a table of hits.

What cannot run here is listed in :data:`SKIPS` with the reason (Docker, root, an
Elasticsearch at a fixed address, the full-size trainings that take hours on 2 CPU cores) and
reported loudly: a PytestWarning naming each skipped command, and the list on stdout. Two
substitutions, both said here: `isr` and `python` are this checkout's (the venv's python with
this tree on PYTHONPATH), and the facade's port 9280 becomes a free one (tests run in
parallel on shared machines). `isr serve` runs in the background from its line to the end;
docker/README's curl and Python-client commands then run against it (the embedded facade
answers the same `_search`, `_count` and client calls as the Elasticsearch mode).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docker/README.md")
PORT = "9280"
TIMEOUT_S = 600  # one command; the whole test takes ~2-3 min on 2 loaded cores

# (pattern searched in the command, why it cannot run here); the first match decides
SKIPS: tuple[tuple[str, str], ...] = (
    (r"^make (demo|test)\b", "the set-up and the whole suite (this test runs inside it)"),
    (r"^docker ", "needs Docker and its compose services (not on the test machine)"),
    (r"^sudo ", "needs root on the host (a kernel setting for Elasticsearch in Docker)"),
    (
        r"localhost:9200",
        "needs an Elasticsearch at localhost:9200 (tests/es runs the ES loader and facade "
        "against a live node instead)",
    ),
    (r"^ISR_ES_URL=", "the live Elasticsearch suite (make test runs it on its own node)"),
    (r"^isr bench\b", "the scale benchmark builds galleries of up to 1M documents (hours)"),
    (
        r"runs/world-10k",
        "full size: a 10,000-image world and its small/paper/minilm trainings (tens of "
        "minutes to hours on 2 CPU cores); the quick start runs the same commands small",
    ),
    (r"-d @query\.json", "its query.json is written by the docker command before it"),
    (r"^(PUT|POST|GET) ", "a Kibana console request to Elasticsearch (not a shell command)"),
)


@dataclass(frozen=True)
class Command:
    doc: str
    line: int
    lang: str  # "bash", "python" or "console"
    text: str


def commands(doc: str) -> Iterator[Command]:
    """The commands of `doc`'s fenced blocks: bash blocks split into commands (continued
    lines and multi-line quotes joined, comments dropped), a python block as one snippet, a
    bare block as Kibana console requests; json blocks are bodies, not commands."""
    lines = (ROOT / doc).read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start, body = m.group(1), i + 1, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if lang == "python":
            yield Command(doc, start + 1, "python", "\n".join(body))
        elif lang == "":
            for k, ln in enumerate(body):
                if re.match(r"^(PUT|POST|GET) ", ln):
                    yield Command(doc, start + k + 1, "console", ln)
        elif lang in ("bash", "sh", "shell"):
            yield from _shell(doc, start, body)


def _shell(doc: str, start: int, body: list[str]) -> Iterator[Command]:
    acc: list[str] = []
    first = 0
    for k, ln in enumerate(body):
        if not acc and (not ln.strip() or ln.lstrip().startswith("#")):
            continue
        if not acc:
            first = start + k + 1
        acc.append(ln)
        text = "\n".join(acc)
        if text.rstrip().endswith("\\"):
            continue
        try:
            shlex.split(text, comments=True)
        except ValueError:  # an open quote: the command goes on on the next line
            continue
        yield Command(doc, first, "bash", text.strip())
        acc = []
    assert not acc, f"{doc}:{first}: unterminated command {acc!r}"


def _code(text: str) -> str:
    """The text without its comments (a skip is decided by what runs, not by what a
    comment mentions)."""
    return "\n".join(re.sub(r"(^|\s)#.*$", "", ln) for ln in text.splitlines())


def skip_reason(c: Command) -> str:
    for pattern, why in SKIPS:
        if re.search(pattern, _code(c.text), re.M):
            return why
    if c.lang == "console":
        return "a Kibana console request to Elasticsearch (not a shell command)"
    return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(tmp: Path) -> Path:
    """`isr` and `python` as a user of this checkout has them."""
    b = tmp / ".bin"
    b.mkdir()
    (b / "isr").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m isr.app.cli "$@"\n')
    (b / "isr").chmod(0o755)
    (b / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # the venv's
    (b / "python").chmod(0o755)
    return b


# checks beyond the exit status: pattern in the command -> check of its stdout
def _filter_example(out: str) -> None:
    hits = json.loads(out)["hits"]["hits"]
    assert hits, "the filter example returned no hits"
    assert {h["_source"]["license"] for h in hits} == {"cc-by"}, hits


def _count(out: str) -> None:
    assert json.loads(out)["count"] == 200


def _table(out: str) -> None:
    assert "| id " in out and out.count("\n|") >= 3, out  # a header, a rule and hits


def _client(out: str) -> None:
    assert len(out.splitlines()) >= 2, out  # hits (id, score, keywords), then the stages


CHECKS: tuple[tuple[str, Callable[[str], None]], ...] = (
    (r'"term": \{"license": "cc-by"\}.*query_text', _filter_example),
    (r"/gallery/_count", _count),
    (r"^isr search ", _table),
)


def test_readme_commands_run(tmp_path: Path) -> None:
    all_cmds = [c for doc in DOCS for c in commands(doc)]
    assert len(all_cmds) > 30  # the parser found the documents' commands
    port = str(_free_port())
    env = {
        **os.environ,
        "PATH": f"{_bin(tmp_path)}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "ISR_API_KEY": "",
    }
    env.pop("ISR_ES_URL", None)
    skipped, ran = [], []
    server: subprocess.Popen[bytes] | None = None
    log = tmp_path / "serve.log"
    t0 = time.monotonic()
    try:
        for c in all_cmds:
            why = skip_reason(c)
            where = f"{c.doc}:{c.line}"
            if why:
                skipped.append(f"{where}: {c.text.splitlines()[0][:90]} -- {why}")
                continue
            text = c.text.replace(PORT, port)
            if c.lang == "bash" and text.startswith("isr serve"):
                assert server is None, "two servers in the README"
                argv = [*shlex.split(text, comments=True), "--port", port]
                with open(log, "wb") as f:
                    server = subprocess.Popen(
                        ["bash", "-c", "exec " + shlex.join(argv)],
                        cwd=tmp_path, env=env, stdout=f, stderr=subprocess.STDOUT,
                    )  # fmt: skip
                _wait_ready(port, server, log)
                ran.append(where)
                continue
            argv = ["bash", "-c", text] if c.lang == "bash" else [sys.executable, "-c", text]
            t = time.monotonic()
            r = subprocess.run(
                argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
            )
            assert r.returncode == 0, (
                f"{where} failed ({r.returncode}):\n{c.text}\n--- stdout\n{r.stdout[-3000:]}\n"
                f"--- stderr\n{r.stderr[-3000:]}"
            )
            for pattern, check in CHECKS:
                if re.search(pattern, text, re.S | re.M):
                    check(r.stdout)
            if "es.search(" in text:
                _client(r.stdout)
            ran.append(f"{where} {time.monotonic() - t:.1f} s")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    took = time.monotonic() - t0
    print(f"README commands: {len(ran)} ran in {took:.0f} s:", *ran, sep="\n  ")
    print(f"{len(skipped)} skipped:")
    for s in skipped:
        print("  SKIPPED", s)
    warnings.warn(
        pytest.PytestWarning(
            f"README: {len(skipped)} command(s) NOT RUN here:\n  " + "\n  ".join(skipped)
        ),
        stacklevel=1,
    )
    assert server is not None, "the README's `isr serve` did not run"
    assert len(ran) >= 22, ran


def _wait_ready(port: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"isr serve exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_isr/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"isr serve did not answer within 120 s:\n{log.read_text()[-3000:]}")


def test_the_parser_and_the_skip_list() -> None:
    """The splitter joins continued lines and multi-line quotes; every skip names a reason;
    the filter example is among the commands that run."""
    cmds = [c for doc in DOCS for c in commands(doc)]
    curl = [c for c in cmds if "cc-by" in c.text and "query_text" in c.text and c.lang == "bash"]
    assert len(curl) == 1 and curl[0].text.count("\n") == 3 and not skip_reason(curl[0])
    loads = [c for c in cmds if c.text.startswith("isr load precomp") and "--fields" in c.text]
    assert loads and "licenses.jsonl" in loads[0].text and not skip_reason(loads[0])
    assert all(not c.text.startswith("#") for c in cmds)
    docker = [c for c in cmds if c.text.startswith("docker ")]
    assert docker and all(skip_reason(c).startswith("needs Docker") for c in docker)
    ran = [c for c in cmds if not skip_reason(c)]
    assert any(c.lang == "python" and c.doc == "README.md" for c in ran)  # its snippet too
    es = [c for c in cmds if "localhost:9200" in _code(c.text)]
    assert es and all(skip_reason(c).startswith("needs an Elasticsearch") for c in es)
