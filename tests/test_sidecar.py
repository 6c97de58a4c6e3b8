"""The sidecar: ids -> fragments, committed like the embedded index, readers that never truncate."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import random_items

from isr.errors import Conflict, InvalidInput
from isr.plugin.config import IndexConfig
from isr.plugin.es.sidecar import Sidecar

CONFIG = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, codec="fp32")


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_upsert_commit_reopen_delete(tmp_path: Path) -> None:
    path = tmp_path / "side"
    items = random_items(20, seed=1)
    with Sidecar.create(path, CONFIG, "gallery") as sc:
        sc.upsert(_ids("a", 20), items.fragments, items.mask)
        assert sc.rows_of(["a3"]) == {}  # not committed yet
        assert sc.commit() == 1
        rows = sc.rows_of(["a3", "zz"])
        assert list(rows) == ["a3"]
        frags, mask = sc.gather(np.array([rows["a3"]]))
        real = items.fragments[3][items.mask[3]]
        np.testing.assert_allclose(frags[0][mask[0]], real, rtol=1e-6)
        again = random_items(2, seed=9)
        sc.upsert(["a3", "b0"], again.fragments, again.mask)  # a3 replaced
        assert sc.delete(["a4", "nope"]) == 1
        sc.commit()
        assert len(sc) == 20 and sc.n_rows == 22
    with Sidecar.open(path, readonly=True, expect=CONFIG) as sc:
        assert sc.es_index == "gallery" and sc.generation == 2
        ids = set(sc.iter_ids())
        assert "a4" not in ids and {"a3", "b0"} <= ids and len(ids) == 20
        frags, mask = sc.gather(np.array([sc.rows_of(["a3"])["a3"]]))
        np.testing.assert_allclose(frags[0][mask[0]], again.fragments[0][again.mask[0]], rtol=1e-6)
    with pytest.raises(Conflict, match="settings differ"):
        Sidecar.open(path, expect=IndexConfig(d_fast=16, d_frag=4))


def test_one_writer_and_rollback(tmp_path: Path) -> None:
    path = tmp_path / "side"
    items = random_items(4, seed=2)
    with Sidecar.create(path, CONFIG, "g") as sc:
        with pytest.raises(Conflict, match="write lock"):
            Sidecar.open(path)
        sc.upsert(_ids("x", 4), items.fragments, items.mask)
        sc.rollback()
        assert len(sc.store) == 0 and sc.rows_of(["x0"]) == {}
        ro = Sidecar.open(path, readonly=True)
        with pytest.raises(Conflict, match="read-only"):
            ro.upsert(["y"], items.fragments[:1], items.mask[:1])
        ro.close()


WRITER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[2])
    from conftest import random_items
    from isr.plugin.config import IndexConfig
    from isr.plugin.es.sidecar import Sidecar
    config = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, codec="fp32")
    sc = Sidecar.create(sys.argv[1], config, "g")
    a = random_items(10, seed=1)
    sc.upsert([f"a{i}" for i in range(10)], a.fragments, a.mask)
    sc.commit()
    b = random_items(10, seed=2)
    sc.upsert([f"b{i}" for i in range(10)], b.fragments, b.mask)  # never committed
    sc.store.sync()
    print("ready", flush=True)
    sys.stdin.readline()  # the parent reads the directory meanwhile, then lets us die
    os._exit(0)
    """
)


def test_crash_loses_only_the_uncommitted_batch_and_readers_never_truncate(
    tmp_path: Path,
) -> None:
    path = tmp_path / "side"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(Path(__file__).parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == b"ready", proc.stderr.read() if proc.stderr else b""
    frag_file = path / "fragments" / "fragments.bin"
    size_mid_batch = frag_file.stat().st_size
    with Sidecar.open(path, readonly=True) as ro:  # a reader while the writer is mid-batch
        assert ro.n_rows == 10 and set(ro.iter_ids()) == {f"a{i}" for i in range(10)}
    assert frag_file.stat().st_size == size_mid_batch  # the writer's tail is still there
    proc.stdin.write(b"\n")
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    with Sidecar.open(path) as sc:  # the next writer cuts the dead batch's tail off
        assert sc.n_rows == 10 and len(sc) == 10 and sc.rows_of(["b0"]) == {}
        assert frag_file.stat().st_size == size_mid_batch // 2
        items = random_items(10, seed=1)
        frags, mask = sc.gather(np.arange(10))
        np.testing.assert_allclose(frags[mask], items.fragments[items.mask], rtol=1e-6)


def test_reader_refreshes_when_a_writer_commits(tmp_path: Path) -> None:
    path = tmp_path / "side"
    items = random_items(6, seed=3)
    with Sidecar.create(path, CONFIG, "g") as sc:
        sc.upsert(_ids("a", 3), items.fragments[:3], items.mask[:3])
        sc.commit()
        with Sidecar.open(path, readonly=True) as ro:
            assert ro.rows_of(["a1"]) == {"a1": 1}
            sc.upsert(_ids("b", 3), items.fragments[3:], items.mask[3:])
            sc.commit()
            rows = ro.rows_of(["b2"])  # a newer generation: the reader refreshes itself
            assert rows == {"b2": 5} and ro.n_rows == 6 and len(ro) == 6
            frags, mask = ro.gather(np.array([5]))
            np.testing.assert_allclose(
                frags[0][mask[0]], items.fragments[5][items.mask[5]], rtol=1e-6
            )


def test_meta_commits_with_the_rows_and_is_checked(tmp_path: Path) -> None:
    """Application entries (an ingest's progress) commit with the fragments; bad ones are
    refused before anything is written, as by the embedded index (one check, in DocTable)."""
    path = tmp_path / "side"
    items = random_items(3)
    with Sidecar.create(path, CONFIG, "gallery") as sc:
        sc.upsert(_ids("a", 3), items.fragments, items.mask)
        with pytest.raises(InvalidInput, match=r"meta\['p'\]: not serialisable"):
            sc.commit(meta={"p": float("nan")})
        with pytest.raises(InvalidInput, match="entry names"):
            sc.commit(meta={"": 1})
        sc.commit(meta={"p": {"position": 3}})
        assert sc.committed_meta() == {"p": {"position": 3}}
    with Sidecar.open(path, readonly=True, expect=CONFIG) as sc:
        assert len(sc) == 3 and sc.committed_meta() == {"p": {"position": 3}}
