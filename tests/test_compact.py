"""Compaction: live rows rewritten, tombstoned ones dropped, atomic and SIGKILL-safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import random_items

from isr.errors import Conflict
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.pipeline import SearchOptions, search

IDS = [f"s{i}" for i in range(600)]


def test_compact_drops_replaced_rows_and_readers_keep_their_snapshot(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    path = tmp_path / "i"
    with EmbeddedIndex.create(path, small_config) as idx:
        for load in range(3):  # a gallery loaded, then re-loaded twice (upserts)
            idx.upsert(
                IDS, random_items(len(IDS), seed=1), [{"n": i, "load": load} for i in range(600)]
            )
            idx.commit()
        idx.delete(IDS[:10])
        idx.commit()
        q = random_items(1, seed=7)
        opt = SearchOptions.for_ablation("exhaustive", size=10)
        want = [h.id for h in search(idx, q, opt).hits]
    reader = EmbeddedIndex.open(path, readonly=True)
    report = EmbeddedIndex.compact(path)
    print("compaction:", json.dumps(report))
    assert report["rows_before"] == 1800 and report["rows_after"] == report["documents"] == 590
    assert report["bytes_per_document_after"] < 0.6 * report["bytes_per_document_before"]
    with reader:  # the old snapshot, still whole
        assert len(reader) == 590 and reader.n_rows == 1800
        assert [h.id for h in search(reader, q, opt).hits] == want
        with pytest.raises(Conflict, match="rewritten"):
            reader.refresh()
    with EmbeddedIndex.open(path, readonly=True) as idx:
        assert len(idx) == 590 and idx.n_rows == 590
        assert [h.id for h in search(idx, q, opt).hits] == want
        rows = idx.rows_of(["s11", "s599", "s3"])
        assert set(rows) == {"s11", "s599"}
        src = idx.docs_at([rows["s11"]])[rows["s11"]][1]
        assert json.loads(src or "") == {"n": 11, "load": 2}
    assert EmbeddedIndex.check(path)["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i"]
    with EmbeddedIndex.open(path) as w:  # writable as before
        w.upsert(["s11"], random_items(1, seed=3))
        w.commit()
        assert len(w) == 590


WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[2])
    from conftest import random_items
    from isr.plugin.embedded.index import EmbeddedIndex
    path = sys.argv[1]
    ids = [f"s{i}" for i in range(300)]
    b = 0
    while True:
        with EmbeddedIndex.open(path) as idx:
            idx.upsert(ids[b % 3 :: 3], random_items(100, seed=b), [{"b": b}] * 100)
            idx.commit()
        EmbeddedIndex.compact(path)
        print(b, flush=True)
        b += 1
    """
)


def test_sigkill_during_compaction_loses_nothing(tmp_path: Path, small_config: IndexConfig) -> None:
    path = tmp_path / "c"
    with EmbeddedIndex.create(path, small_config) as idx:
        idx.add([f"s{i}" for i in range(300)], random_items(300), [{"b": -1}] * 300)
        idx.commit()
    rng = np.random.default_rng(0)
    kills, progressed = 0, 0
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), str(Path(__file__).parent)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # one whole cycle first (start-up takes seconds under load)
        time.sleep(float(rng.random()) * 1.2)  # then a kill anywhere in the next cycles
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()
        kills += 1
        progressed += 1 + len(out.split())
        with EmbeddedIndex.open(path) as idx:  # opens (recovering), nothing lost or doubled
            assert len(idx) == 300
            assert len(idx.rows_of([f"s{i}" for i in range(300)])) == 300
        report = EmbeddedIndex.check(path)
        assert report["ok"], report
    print(f"compaction SIGKILLs: {kills}, compactions completed meanwhile: {progressed}")
    assert progressed >= 1, "no compaction ever finished; the test proved nothing"
