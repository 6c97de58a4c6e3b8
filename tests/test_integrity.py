"""Integrity: the committed configuration is the truth, checksums find damaged files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import random_items

from isr.errors import CorruptIndex, InvalidInput, IsrError
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex


def _build(path: Path, config: IndexConfig) -> None:
    with EmbeddedIndex.create(path, config) as idx:
        for b in range(3):
            ids = [f"b{b}-{i}" for i in range(40)]
            idx.add(ids, random_items(40, seed=b), [{"b": b, "tag": ["x"]}] * 40)
            idx.commit()
        idx.delete(["b0-1"])
        idx.commit()


def test_an_edited_manifest_is_refused_and_nothing_truncated(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    path = tmp_path / "i"
    _build(path, small_config)
    sizes = {f: f.stat().st_size for f in path.rglob("*") if f.is_file()}
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["config"]["r_i"] = 2
    manifest["config"]["d_fast"] = 8
    (path / "manifest.json").write_text(json.dumps(manifest))
    for readonly in (False, True):
        with pytest.raises(CorruptIndex, match=r"manifest\.json disagrees") as e:
            EmbeddedIndex.open(path, readonly=readonly)
        assert "r_i: document table 3, manifest.json 2" in str(e.value)
        assert "d_fast: document table 16, manifest.json 8" in str(e.value)
    for f, size in sizes.items():
        if f.name != "manifest.json":
            assert f.stat().st_size == size, f"{f} was changed"


def test_an_index_from_before_the_committed_configuration_opens_to_write(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    """An index whose document table has no configuration row (made before it was committed):
    a reader takes manifest.json's, a writer commits it and writes on (it failed with sqlite's
    "cannot start a transaction within a transaction" and lost nothing, but could not write)."""
    import sqlite3

    path = tmp_path / "i"
    _build(path, small_config)
    with sqlite3.connect(path / "docs.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'config'")
    with EmbeddedIndex.open(path, readonly=True) as r:
        assert r.config == small_config and len(r) == 119
    with sqlite3.connect(path / "docs.sqlite") as db:
        assert db.execute("SELECT count(*) FROM meta WHERE key = 'config'").fetchone() == (0,)
    with EmbeddedIndex.open(path) as w:
        w.add(["new"], random_items(1, seed=9), [{"b": 9, "tag": ["y"]}])
        w.commit()
    with sqlite3.connect(path / "docs.sqlite") as db:
        (stored,) = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    assert IndexConfig.from_json(json.loads(stored)) == small_config
    with EmbeddedIndex.open(path, readonly=True) as r:
        assert len(r) == 120


def test_non_finite_values_never_enter_a_row_file(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    with EmbeddedIndex.create(tmp_path / "i", small_config) as idx:
        items = random_items(3)
        items.fast[1, 2] = np.nan  # bypassing Encoded's own check, as a caller could
        with pytest.raises(InvalidInput, match="NaN or inf"):
            idx.add(["a", "b", "c"], items)
        assert len(idx.fast.vectors) == 0


def test_missing_document_table_is_named_and_not_recreated(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    path = tmp_path / "i"
    _build(path, small_config)
    (path / "docs.sqlite").unlink()
    for readonly in (False, True):
        with pytest.raises(CorruptIndex, match=r"docs\.sqlite: the document table is missing"):
            EmbeddedIndex.open(path, readonly=readonly)
    assert not (path / "docs.sqlite").exists()


FILES = (
    "manifest.json",
    "docs.sqlite",
    "fast.f32",
    "keywords.i32",
    "fragments/fragments.bin",
    "fragments/counts.u8",
    "fragments/store.json",
    "hnsw.faiss",
    "hnsw.faiss.crc",
)


def _detected(path: Path, name: str) -> tuple[bool, str]:
    """Is the damage to `name` found, by an open or a search or `check`, naming the file?"""
    base = Path(name).name
    try:
        with EmbeddedIndex.open(path, readonly=True) as idx:
            q = random_items(1, seed=5)
            from isr.plugin.pipeline import SearchOptions, search

            search(idx, q, SearchOptions(size=5))
    except IsrError as e:
        return base in str(e) or name in str(e), f"open/search: {e}"
    report = EmbeddedIndex.check(path)
    said = " | ".join(report["problems"])
    return any(base.split(".crc")[0] in p for p in report["problems"]), f"check: {said}"


def _dump(db: Path) -> list[str] | None:
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return list(con.iterdump())
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None


def test_damage_to_every_file_is_detected(tmp_path: Path, small_config: IndexConfig) -> None:
    clean = tmp_path / "clean"
    _build(clean, small_config)
    assert EmbeddedIndex.check(clean)["ok"], EmbeddedIndex.check(clean)
    rng = np.random.default_rng(0)
    found, missed, harmless = [], [], []
    for name in FILES:
        for damage in ("truncate", "garble@0.1", "garble@0.33", "garble@0.8"):
            path = tmp_path / f"{name.replace('/', '_')}-{damage}"
            shutil.copytree(clean, path)
            f = path / name
            data = bytearray(f.read_bytes())
            if damage == "truncate":
                data = data[: len(data) // 2]
            else:
                lo = int(len(data) * float(damage.split("@")[1]))
                n = min(64, max(1, len(data) - lo))
                data[lo : lo + n] = bytes(rng.integers(0, 256, n, dtype=np.uint8))
            f.write_bytes(bytes(data))
            ok, how = _detected(path, name)
            if not ok and name == "docs.sqlite" and _dump(f) == _dump(clean / name):
                harmless.append(f"{name} {damage}")  # bytes in a page's unused space
                continue
            (found if ok else missed).append(f"{name} {damage}: {how}")
    share = len(found) / (len(found) + len(missed))
    print(
        f"corruption detected with the file named: {len(found)}/{len(found) + len(missed)} "
        f"(+{len(harmless)} damages that changed no content: {harmless})"
    )
    assert not missed, missed
    assert share == 1.0 and len(found) >= 3 * len(FILES)


def test_delete_takes_the_lock_is_atomic_and_finishes_a_half_done_one(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    from isr.errors import Conflict, NotFound

    path = tmp_path / "i"
    _build(path, small_config)
    with EmbeddedIndex.open(path) as w:
        with pytest.raises(Conflict, match="write lock"):
            EmbeddedIndex.destroy(path)
        assert len(w) == 119  # untouched
    # killed after its rename: the next delete finishes it
    path.rename(tmp_path / "i.deleting")
    EmbeddedIndex.destroy(path)
    assert not (tmp_path / "i.deleting").exists()
    # killed half-way through an old-style rmtree: no manifest, the rest still there
    _build(path, small_config)
    (path / "manifest.json").unlink()
    EmbeddedIndex.destroy(path)
    assert not path.exists()
    with pytest.raises(NotFound):
        EmbeddedIndex.destroy(path)
    (tmp_path / "other").mkdir()
    with pytest.raises(NotFound):
        EmbeddedIndex.destroy(tmp_path / "other")


def test_cli_index_check(tmp_path: Path, small_config: IndexConfig) -> None:
    from click.testing import CliRunner

    from isr.app.cli import main

    path = tmp_path / "i"
    _build(path, small_config)
    r = CliRunner().invoke(main, ["index", "check", str(path)])
    assert r.exit_code == 0 and json.loads(r.output)["ok"] is True, r.output
    f = path / "keywords.i32"
    data = bytearray(f.read_bytes())
    data[8:12] = b"\xff\x00\x00\x7f"
    f.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["index", "check", str(path)])
    assert r.exit_code == 1 and "keywords.i32: bytes [0, " in r.output, r.output
