"""A live index: readers see one committed generation, and catch up with `refresh`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import random_items

from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex

STABLE = [f"s{i}" for i in range(300)]


def _expected(gen: int) -> int:
    """Live documents after generation `gen` of :func:`_writer`."""
    return len(STABLE) + 50 * (gen - 1) - 5 * max(gen - 2, 0)


def _writer_batch(idx: EmbeddedIndex, b: int) -> None:
    """Batch b >= 1: upsert 50 stable ids, add 50 new ones, delete 5 of the last batch's."""
    up = [STABLE[(b * 50 + j) % len(STABLE)] for j in range(50)]
    idx.upsert(up, random_items(50, seed=b), [{"v": b, "id": d} for d in up])
    new = [f"n{b}-{j}" for j in range(50)]
    idx.add(new, random_items(50, seed=1000 + b), [{"v": b, "id": d} for d in new])
    if b >= 2:
        idx.delete([f"n{b - 1}-{j}" for j in range(5)])
    idx.commit()


def _consistent(idx: EmbeddedIndex) -> bool:
    snap = idx.snapshot
    if len(snap.alive) != _expected(snap.generation):
        return False
    if len(idx.rows_of(STABLE)) != len(STABLE):
        return False
    return snap.alive.max() < snap.n_rows if len(snap.alive) else True


@pytest.fixture
def live(tmp_path: Path, small_config: IndexConfig) -> Path:
    path = tmp_path / "live"
    with EmbeddedIndex.create(path, small_config) as idx:
        idx.add(STABLE, random_items(len(STABLE)), [{"v": 0, "id": d} for d in STABLE])
        idx.commit()
    return path


def test_a_commit_between_an_opens_reads_is_not_seen(live: Path) -> None:
    """The torn read: a commit landing after the reader read n_rows and before it read the
    tombstones. The upserted documents must stay visible (in their old version)."""
    ids = STABLE[:10]

    def upsert_now() -> None:
        EmbeddedIndex._between_reads = None  # once: not again for the writer's own open
        with EmbeddedIndex.open(live) as w:
            w.upsert(ids, random_items(10, seed=9), [{"v": 1, "id": d} for d in ids])
            w.commit()

    EmbeddedIndex._between_reads = upsert_now
    try:
        reader = EmbeddedIndex.open(live, readonly=True)
    finally:
        EmbeddedIndex._between_reads = None
    with reader:
        assert reader.generation == 1 and len(reader) == len(STABLE)
        rows = reader.rows_of(ids)
        assert len(rows) == 10, "the upserted documents vanished from the reader"
        docs = reader.docs_at(list(rows.values()))
        assert all('"v": 0' in (src or "") for _, src in docs.values())
        # refresh: the new versions replace the old ones, nothing lost or doubled
        assert reader.refresh() is True
        assert reader.generation == 2 and len(reader) == len(STABLE)
        rows = reader.rows_of(ids)
        docs = reader.docs_at(list(rows.values()))
        assert len(rows) == 10 and all('"v": 1' in (src or "") for _, src in docs.values())
        assert reader.refresh() is False


def test_readers_opened_while_a_writer_commits_are_consistent(live: Path) -> None:
    """Soak: open readers (and refresh one long-lived reader) while a writer upserts, adds
    and deletes; every snapshot must be one generation's."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with EmbeddedIndex.open(live) as idx:
                b = 1
                while not stop.is_set() and b < 4000:
                    _writer_batch(idx, b)
                    if b % 5 == 0:
                        idx.fast.snapshot()  # keeps reader opens cheap
                    b += 1
                    time.sleep(0.05)  # a commit every ~0.1 s: many generations, small index
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    opens = bad = refreshes = 0
    gens = set()
    # Counted, not timed: the soak ends after 200 opens (a loaded 2-core machine managed 181 in
    # 40 s); the deadline only stops a hung run.
    deadline = time.monotonic() + 600
    try:
        with EmbeddedIndex.open(live, readonly=True) as long_lived:
            while time.monotonic() < deadline and opens < 200 and thread.is_alive():
                with EmbeddedIndex.open(live, readonly=True) as r:
                    opens += 1
                    gens.add(r.generation)
                    bad += not _consistent(r)
                refreshes += long_lived.refresh()
                bad += not _consistent(long_lived)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not errors, errors
    assert opens >= 200, f"only {opens} reader opens before the writer stopped or 600 s passed"
    assert len(gens) >= 10 and refreshes >= 10, (len(gens), refreshes)
    assert bad == 0, f"{bad} inconsistent snapshots of {opens} opens + refreshes"


def test_the_server_refreshes(live: Path) -> None:
    from starlette.testclient import TestClient

    from isr.plugin.http.server import ServerConfig, create_app

    config = ServerConfig(root=live.parent, allowed_hosts=("testserver",), refresh_interval=0.2)

    def total(c: TestClient) -> int:
        r = c.post("/live/_search", json={"size": 0})
        assert r.status_code == 200, r.text
        return int(r.json()["hits"]["total"]["value"])

    with TestClient(create_app(config)) as c, EmbeddedIndex.open(live) as w:
        assert total(c) == len(STABLE)
        _writer_batch(w, 1)
        r = c.post("/live/_refresh")
        assert r.status_code == 200 and r.json()["_shards"]["failed"] == 0
        assert total(c) == _expected(2)
        _writer_batch(w, 2)
        deadline = time.monotonic() + 10
        while total(c) != _expected(3) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert total(c) == _expected(3), "the background refresh never showed the commit"
        got = c.get("/_isr/ready/live").json()["live"]
        assert got == {"status": "green", "documents": _expected(3), "generation": 3}
        assert c.get("/_isr/ready/nope").status_code == 404
        # a deleted document is gone and a replaced one shows its new _source
        w.delete(["s0"])
        w.upsert(["s1"], random_items(1, seed=77), [{"v": 99, "id": "s1"}])
        w.commit()
        c.post("/_refresh")
        f = {"query": {"terms": {"id": ["s0", "s1"]}}}
        hits = c.post("/live/_search", json=f).json()["hits"]["hits"]
        assert [(h["_id"], h["_source"]["v"]) for h in hits] == [("s1", 99)]
