"""A reader's preload: its memory maps prefaulted at once, on open and after each refresh."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import random_items

from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.pipeline import SearchOptions, search
from isr.plugin.store.rowfile import prefault


def _mapped_kib(file: Path) -> int:
    """KiB of ``file`` mapped into this process now (the Rss of its maps, /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
            inside = line.endswith(str(file))
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


@pytest.mark.skipif(sys.platform != "linux", reason="MADV_POPULATE_READ is Linux's")
def test_prefault_maps_every_page_in(tmp_path: Path) -> None:
    file = tmp_path / "f.bin"
    data = np.random.default_rng(0).integers(0, 255, 2**21, dtype=np.uint8)  # 2 MiB
    file.write_bytes(data.tobytes())
    view = np.memmap(file, np.uint8, "r")
    assert _mapped_kib(file) == 0  # a fresh map: nothing in until read
    if not prefault(view):
        pytest.skip("this kernel lacks MADV_POPULATE_READ (Linux < 5.14)")
    assert _mapped_kib(file) == 2048  # every page, before any read
    assert np.array_equal(np.asarray(view), data)  # the contents are untouched
    assert prefault(np.zeros(8)) is False  # not a map: nothing to do


def test_preloaded_reader_searches_alike_and_keeps_its_maps_in_after_refresh(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    path = tmp_path / "idx"
    ids = [f"d{i}" for i in range(300)]
    with EmbeddedIndex.create(path, small_config) as w:
        w.add(ids, random_items(300, seed=1))
        w.commit()
    queries = random_items(8, seed=7)
    plain = EmbeddedIndex.open(path, readonly=True)
    pre = EmbeddedIndex.open(path, readonly=True)
    pre.preload()
    try:
        assert pre.fragments.preload and pre.fast.vectors.preload and pre.keywords.labels.preload
        opt = SearchOptions(size=5, rerank_window=20, num_candidates=40)
        for i in range(len(queries)):
            a, b = search(plain, queries[i : i + 1], opt), search(pre, queries[i : i + 1], opt)
            assert [(h.id, h.score) for h in a.hits] == [(h.id, h.score) for h in b.hits]
        more = [f"e{i}" for i in range(200)]
        with EmbeddedIndex.open(path) as w:
            w.add(more, random_items(200, seed=2))
            w.commit()
        assert pre.refresh() and plain.refresh()
        # the refresh remapped the grown files before publishing: every row is in the maps
        assert pre.fragments._mapped == 500 and pre.fast.vectors._view is not None
        assert pre.fast.vectors._view.shape[0] == 500
        assert plain.fragments._mapped == 300  # a plain reader maps on its next read
        for i in range(len(queries)):
            a, b = search(plain, queries[i : i + 1], opt), search(pre, queries[i : i + 1], opt)
            assert [(h.id, h.score) for h in a.hits] == [(h.id, h.score) for h in b.hits]
    finally:
        plain.close()
        pre.close()
