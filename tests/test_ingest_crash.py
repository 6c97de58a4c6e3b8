"""`python ingest/load_gallery.py` killed with SIGKILL mid-ingest, then run again with --resume:
the index ends with exactly the gallery's documents, none written twice.

The gallery is pre-encoded JSONL, so the command starts without importing the transformer
stack (the bundle path costs ~10 s of imports per process on the project machine); the
resume logic is the same for every source, and a crash of a bundle-encoded load is covered
in tests/test_ingest_loader.py. The resumed run goes through the same command line in this
process (click's runner), sparing a second interpreter start.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from conftest import random_items

from isr.app.load import main
from isr.ingest.encoded_export import write_jsonl
from isr.plugin.embedded.index import EmbeddedIndex

SCRIPT = Path(__file__).resolve().parents[1] / "ingest" / "load_gallery.py"
N = 3000


def _generation(index: Path) -> int:
    try:
        return int(json.loads((index / "manifest.json").read_text())["generation"])
    except FileNotFoundError:
        return 0


def test_sigkill_then_resume_gives_exactly_the_gallery(tmp_path: Path) -> None:
    gallery, index = tmp_path / "gallery.jsonl", tmp_path / "idx"
    for b in range(0, N, 500):
        ids = [f"doc{i}" for i in range(b, b + 500)]
        write_jsonl(gallery, ids, random_items(500, seed=b), [{"i": i} for i in range(b, b + 500)],
                    append=True)  # fmt: skip
    cmd = [sys.executable, str(SCRIPT), "--threads", "1", "encoded", str(gallery),
           "--index", str(index), "--batch-size", "50", "--commit-every", "200", "--max-frags",
           "4", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _generation(index) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]

    with EmbeddedIndex.open(index, readonly=True) as idx:
        done = idx.committed_meta()["ingest"]["sources"][0]["position"]
        assert 400 <= done < N and done % 200 == 0
        assert len(idx) == done  # committed batches whole (the writer's tail is cut on open)

    out = CliRunner().invoke(main, [*cmd[4:], "--resume"])  # from "encoded" on
    assert out.exit_code == 0, out.output[-2000:]
    assert f"positions {done:,} -> {N:,} of {N:,} (complete) [resumed]" in out.output
    assert f"({N - done:,} new, 0 replaced)" in out.output
    with EmbeddedIndex.open(index, readonly=True) as idx:
        assert len(idx) == idx.n_rows == N  # no document written twice, none missing
        assert sorted(idx.table.iter_live_ids()) == sorted(f"doc{i}" for i in range(N))
        assert idx.fast.hnsw.ntotal == N
        row = idx.rows_of(["doc1234"])["doc1234"]
        assert json.loads(idx.docs_at([row])[row][1]) == {"i": 1234}
