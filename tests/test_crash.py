"""A writer killed with SIGKILL at arbitrary moments loses at most its uncommitted batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from isr.plugin.embedded.index import EmbeddedIndex

WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from conftest import random_items
    from isr.plugin.embedded.index import EmbeddedIndex
    from isr.plugin.config import IndexConfig
    path = sys.argv[1]
    config = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, hnsw_m=8, hnsw_ef_construction=40)
    try:
        idx = EmbeddedIndex.open(path)
    except Exception:
        idx = EmbeddedIndex.create(path, config)
    b = idx.generation
    while True:
        ids = [f"g{b}-{i}" for i in range(200)]
        idx.add(ids, random_items(200, seed=b), [{"batch": b}] * 200)
        idx.delete([f"g{b - 1}-0"], missing_ok=True)
        idx.commit()
        print(b, flush=True)
        b += 1
    """
)


def _check(path: Path) -> int:
    with EmbeddedIndex.open(path) as idx:
        gen = idx.generation
        # every committed batch is whole: 200 docs per batch, minus one deleted per later batch
        expected = 200 * gen - max(gen - 1, 0)
        assert len(idx) == expected, (gen, len(idx))
        assert idx.n_rows == 200 * gen == len(idx.fast.vectors) == len(idx.fragments)
        assert idx.fast.hnsw.ntotal == idx.n_rows
        if gen:
            last = [f"g{gen - 1}-{i}" for i in range(1, 200)]
            rows = idx.rows_of(last)
            assert len(rows) == 199
            frags, mask = idx.fragments.gather(np.array(sorted(rows.values())))
            assert mask.any(axis=1).all() and np.isfinite(frags).all()
    return gen


def test_sigkill_mid_ingest_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "crash"
    tests_dir = str(Path(__file__).parent)
    gens = []
    for delay in (0.8, 1.3, 1.7):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), tests_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        time.sleep(delay)
        deadline = time.time() + 60
        while proc.poll() is None and not path.exists() and time.time() < deadline:
            time.sleep(0.1)  # slow machine: wait until the index exists
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        gens.append(_check(path))
    assert gens[-1] >= 1, "the writer never committed a batch; the test proved nothing"
