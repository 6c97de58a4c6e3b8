"""The embedded index: persistence, upsert/delete, commit/rollback, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import random_items

from isr.encoders.record import Encoded, Keywords
from isr.errors import Conflict, CorruptIndex, InvalidInput, NotFound
from isr.plugin.backend import check_ids
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.filters import parse_filter


def test_add_commit_reopen_roundtrip(tmp_path: Path, small_config: IndexConfig) -> None:
    items = random_items(50)
    with EmbeddedIndex.create(tmp_path / "i", small_config) as idx:
        idx.add([f"d{i}" for i in range(50)], items, [{"n": i} for i in range(50)])
        assert len(idx) == 0  # not searchable before commit
        assert idx.commit() == 1
        assert len(idx) == 50
    with EmbeddedIndex.open(tmp_path / "i", readonly=True) as idx:
        assert len(idx) == 50 and idx.generation == 1
        rows = idx.rows_of(["d7", "d42"])
        frags, mask = idx.fragments.gather(np.array([rows["d7"]]))
        real = items.fragments[7][items.mask[7]]
        np.testing.assert_allclose(frags[0][mask[0]], real, atol=2e-3)
        np.testing.assert_allclose(
            idx.fast.vectors_at(np.array([rows["d42"]]))[0], items.fast[42], atol=1e-6
        )
        doc_id, src = idx.docs_at([rows["d7"]])[rows["d7"]]
        assert doc_id == "d7" and json.loads(src or "") == {"n": 7}
        assert idx.labels_of(np.array([rows["d7"]]))[0] == list(items.keywords[7].labels)
    manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
    assert manifest["documents"] == 50 and manifest["generation"] == 1


def test_rollback_and_close_drop_uncommitted(tmp_path: Path, small_config: IndexConfig) -> None:
    with EmbeddedIndex.create(tmp_path / "i", small_config) as idx:
        idx.add(["a", "b"], random_items(2))
        idx.commit()
        idx.add(["c"], random_items(1, seed=2))
        idx.rollback()
        assert idx.rows_of(["c"]) == {}
        idx.add(["c"], random_items(1, seed=3))  # the id is free again
        # closing without commit drops it
    with EmbeddedIndex.open(tmp_path / "i") as idx:
        assert len(idx) == 2 and idx.rows_of(["a", "b", "c"]).keys() == {"a", "b"}
        assert len(idx.fast.vectors) == 2 and len(idx.fragments) == 2


def test_upsert_replaces_and_delete_tombstones(tmp_path: Path, small_config: IndexConfig) -> None:
    with EmbeddedIndex.create(tmp_path / "i", small_config) as idx:
        idx.add(["a", "b", "c"], random_items(3))
        idx.commit()
        with pytest.raises(Conflict, match="use upsert"):
            idx.add(["b"], random_items(1))
        new = random_items(1, seed=9)
        idx.upsert(["b"], new)
        idx.commit()
        assert len(idx) == 3 and idx.n_rows == 4
        row = idx.rows_of(["b"])["b"]
        np.testing.assert_allclose(idx.fast.vectors_at(np.array([row]))[0], new.fast[0], atol=1e-6)
        assert idx.delete(["a"]) == 1
        with pytest.raises(NotFound, match="zzz"):
            idx.delete(["zzz"])
        assert idx.delete(["zzz", "c"], missing_ok=True) == 1
        idx.commit()
        assert len(idx) == 1
    with EmbeddedIndex.open(tmp_path / "i") as idx:
        assert len(idx) == 1 and list(idx.rows_of(["a", "b", "c"])) == ["b"]
        assert idx.stats()["deleted"] == 3


def test_bad_inputs_name_the_problem(tmp_path: Path, small_config: IndexConfig) -> None:
    idx = EmbeddedIndex.create(tmp_path / "i", small_config)
    with pytest.raises(InvalidInput, match="16"):
        idx.add(["x"], random_items(1, d_fast=12))
    with pytest.raises(InvalidInput, match="fragments have 5 dims"):
        idx.add(["x"], random_items(1, d_frag=5))
    with pytest.raises(InvalidInput, match="at most 4"):
        idx.add(
            ["x"],
            Encoded(
                np.ones((1, 16)), np.ones((1, 6, 8)), np.ones((1, 6), bool), (Keywords.none(),)
            ),
        )
    with pytest.raises(InvalidInput, match="duplicate id 'x'"):
        idx.add(["x", "x"], random_items(2))
    with pytest.raises(InvalidInput, match="non-empty strings"):
        idx.add([""], random_items(1))
    with pytest.raises(InvalidInput, match="2 ids for 1 items"):
        idx.add(["x", "y"], random_items(1))
    # ids are bounded in UTF-8 bytes, as Elasticsearch's _id: 300 characters of 2 bytes each
    with pytest.raises(InvalidInput, match="longer than 512 bytes"):
        idx.add(["é" * 300], random_items(1))
    assert check_ids(["é" * 256], 1) == ["é" * 256]  # 512 bytes: fits both backends
    with pytest.raises(InvalidInput, match="JSON object"):
        idx.add(["x"], random_items(1), ["not a dict"])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="NaN"):
        Encoded(
            np.full((1, 16), np.nan), np.ones((1, 4, 8)), np.ones((1, 4), bool), (Keywords.none(),)
        )
    with pytest.raises(InvalidInput, match="zero norm"):
        Encoded(np.zeros((1, 16)), np.ones((1, 4, 8)), np.ones((1, 4), bool), (Keywords.none(),))
    with pytest.raises(InvalidInput, match="no fragments"):
        Encoded(np.ones((1, 16)), np.ones((1, 4, 8)), np.zeros((1, 4), bool), (Keywords.none(),))
    idx.add(["ok"], random_items(1), [{"year": 2001}])
    idx.commit()
    with pytest.raises(InvalidInput, match=r"'year'.*numeric field got 'soon'"):
        idx.add(["bad"], random_items(1), [{"year": "soon"}])
    assert len(idx) == 1 and idx.n_rows == 1  # nothing of the refused batches was written
    assert len(idx.fast.vectors) == 1
    idx.close()


def test_open_errors(tmp_path: Path, small_config: IndexConfig) -> None:
    with pytest.raises(NotFound, match="no isr index"):
        EmbeddedIndex.open(tmp_path / "nope")
    EmbeddedIndex.create(tmp_path / "i", small_config).close()
    with pytest.raises(Conflict, match="already exists"):
        EmbeddedIndex.create(tmp_path / "i", small_config)
    other = IndexConfig(d_fast=16, d_frag=32, max_frags=4, r_i=3, codec="sq8")
    with pytest.raises(
        Conflict,
        match=r"d_frag: index has 8, asked for 32.*codec: index has 'fp16', asked for 'sq8'",
    ):
        EmbeddedIndex.open(tmp_path / "i", expect=other)
    with EmbeddedIndex.open(tmp_path / "i"), pytest.raises(Conflict, match="write lock"):
        EmbeddedIndex.open(tmp_path / "i")
    (tmp_path / "i" / "manifest.json").write_text("{not json")
    with pytest.raises(Exception, match="not valid JSON"):
        EmbeddedIndex.open(tmp_path / "i")


def test_hnsw_snapshot_is_caught_up_on_open(tmp_path: Path, small_config: IndexConfig) -> None:
    with EmbeddedIndex.create(tmp_path / "i", small_config) as idx:
        idx.add([f"a{i}" for i in range(30)], random_items(30))
        idx.commit()
    # close() wrote a snapshot of 30 rows; add 20 more and lose the snapshot update
    idx = EmbeddedIndex.open(tmp_path / "i")
    idx.add([f"b{i}" for i in range(20)], random_items(20))
    idx.commit()
    idx.table.close()  # simulate a crash: no close(), so no new snapshot
    idx.fast.close()
    idx.keywords.close()
    idx.fragments.close()
    assert idx.segment._lock is not None
    idx.segment.release()
    with EmbeddedIndex.open(tmp_path / "i") as again:
        assert again.fast.hnsw.ntotal == 50 and len(again) == 50


def test_stats_and_destroy(tmp_path: Path, small_config: IndexConfig) -> None:
    with EmbeddedIndex.create(tmp_path / "i", small_config) as idx:
        idx.add(
            [f"d{i}" for i in range(10)], random_items(10), [{"tag": ["x", "y"], "ok": True}] * 10
        )
        idx.commit()
        s = idx.stats()
    assert s["documents"] == 10 and s["fields"] == {"tag": "keyword", "ok": "boolean"}
    assert s["bytes"]["fragments"] == 10 * (4 * 8 * 2 + 1)
    assert s["bytes_per_document"] > 0
    EmbeddedIndex.destroy(tmp_path / "i")
    assert not (tmp_path / "i").exists()
    with pytest.raises(NotFound):
        EmbeddedIndex.destroy(tmp_path)


def test_reader_never_truncates_a_writers_uncommitted_tail(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    writer = EmbeddedIndex.create(tmp_path / "i", small_config)
    writer.add(["a", "b"], random_items(2))
    writer.commit()
    writer.add(["c"], random_items(1, seed=4))  # appended, not committed
    frag_file = tmp_path / "i" / "fragments" / "fragments.bin"
    size = frag_file.stat().st_size
    with EmbeddedIndex.open(tmp_path / "i", readonly=True) as reader:
        assert len(reader) == 2 and len(reader.fragments) == 2
        with pytest.raises(Conflict, match="read-only"):
            reader.add(["d"], random_items(1))
    assert frag_file.stat().st_size == size  # the writer's pending row survived the reader
    writer.commit()
    assert len(writer) == 3
    writer.close()


def test_stored_fields_are_kept_but_not_indexed(tmp_path: Path) -> None:
    config = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, stored_fields=("captions",))
    with EmbeddedIndex.create(tmp_path / "i", config) as idx:
        idx.add(["a"], random_items(1), [{"captions": ["a dog", "a puppy"], "year": 2001}])
        idx.commit()
        assert idx.fields.mapping == {"year": "long"}
        assert json.loads(idx.docs_at([0])[0][1] or "")["captions"] == ["a dog", "a puppy"]
        with pytest.raises(InvalidInput, match="stored in _source but not indexed"):
            idx.filter_rows(parse_filter({"term": {"captions": "a dog"}}))  # type: ignore[arg-type]
    with EmbeddedIndex.open(tmp_path / "i") as idx:
        assert idx.config.stored_fields == ("captions",) and idx.fields.mapping == {"year": "long"}


def test_commit_without_waiting_for_the_graph(tmp_path: Path, small_config: IndexConfig) -> None:
    """A bulk-load commit is durable at once; the graph catches up before any search."""
    items = random_items(300)
    ids = [f"d{i}" for i in range(300)]
    with (
        EmbeddedIndex.create(tmp_path / "a", small_config) as a,
        EmbeddedIndex.create(tmp_path / "b", small_config) as b,
    ):
        for lo in range(0, 300, 100):
            a.add(ids[lo : lo + 100], items[lo : lo + 100])
            a.commit(wait_for_graph=False)
            b.add(ids[lo : lo + 100], items[lo : lo + 100])
            b.commit()
        # durable before the graph is done: a reader opened now sees every document
        with EmbeddedIndex.open(tmp_path / "a", readonly=True) as reader:
            assert len(reader) == 300
        for i in (0, 150, 299):
            q = items.fast[i]
            got = a.knn(q, 5, 64, None, 0)
            want = b.knn(q, 5, 64, None, 0)
            assert got.method == "hnsw" and a.fast.hnsw.ntotal == 300
            np.testing.assert_array_equal(got.rows, want.rows)
    with EmbeddedIndex.open(tmp_path / "a", readonly=True) as again:
        assert again.fast.snapshot_rows == 300  # close waited for the graph, then snapshot


def test_a_failed_background_insertion_is_reported(
    tmp_path: Path, small_config: IndexConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = random_items(20)
    index = EmbeddedIndex.create(tmp_path / "a", small_config)
    index.add([f"d{i}" for i in range(20)], items)

    def broken(x: np.ndarray, n_rows: int) -> None:
        raise MemoryError("no room for the graph")

    monkeypatch.setattr(index.fast, "_insert", broken)
    index.commit(wait_for_graph=False)
    with pytest.raises(CorruptIndex, match="no room for the graph"):
        index.knn(items.fast[0], 3, 16, None, 0)
    monkeypatch.undo()
    index.close()  # the documents were committed: reopening rebuilds the graph from them
    with EmbeddedIndex.open(tmp_path / "a", readonly=True) as again:
        assert len(again) == 20 and again.fast.hnsw.ntotal == 20
