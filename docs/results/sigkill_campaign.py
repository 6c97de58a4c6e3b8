"""SIGKILL campaign for issue 14: kills during loads (tests/test_crash.py's writer) and during
upsert/delete/compaction cycles (tests/test_compact.py's worker); every reopen is checked.

Run from the repository root: `PYTHONPATH=$PWD python docs/results/sigkill_campaign.py 50 20`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, "tests")
from conftest import random_items  # noqa: E402
from test_compact import WORKER  # noqa: E402
from test_crash import WRITER, _check  # noqa: E402

from isr.plugin.config import IndexConfig  # noqa: E402
from isr.plugin.embedded.index import EmbeddedIndex  # noqa: E402


def _kill(script: str, path: Path, rng: np.random.Generator, wait_line: bool) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), "tests"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    assert proc.stdout is not None
    if wait_line:
        proc.stdout.readline()
    time.sleep(float(rng.random()) * 1.0)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    return len(out.split())


def main() -> None:
    n_load, n_cycle = int(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(14)
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load"
        gens = []
        for i in range(n_load):
            _kill(WRITER, path, rng, wait_line=True)
            try:
                gens.append(_check(path))
                if not EmbeddedIndex.check(path)["ok"]:
                    bad += 1
            except Exception as e:  # counted, reported
                bad += 1
                print("load kill", i, "bad:", e, flush=True)
        print(f"loads: {n_load} kills, last generation {gens[-1] if gens else None}, bad {bad}")
        path = Path(tmp) / "cycle"
        config = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, hnsw_m=8, hnsw_ef_construction=40)
        with EmbeddedIndex.create(path, config) as idx:
            idx.add([f"s{i}" for i in range(300)], random_items(300), [{"b": -1}] * 300)
            idx.commit()
        bad2 = done = 0
        for i in range(n_cycle):
            done += _kill(WORKER, path, rng, wait_line=True) + 1
            try:
                with EmbeddedIndex.open(path) as idx:
                    ok = len(idx) == 300 and len(idx.rows_of([f"s{j}" for j in range(300)])) == 300
                ok = ok and EmbeddedIndex.check(path)["ok"]
            except Exception as e:
                ok = False
                print("cycle kill", i, "bad:", e, flush=True)
            bad2 += not ok
        print(f"upsert/compaction cycles: {n_cycle} kills, {done} cycles completed, bad {bad2}")


if __name__ == "__main__":
    main()
