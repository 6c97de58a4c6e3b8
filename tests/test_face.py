"""The engine's public face (`isr.plugin`): open a target and search it without its insides."""

from __future__ import annotations

from pathlib import Path

import pytest

from isr.errors import InvalidInput, NotFound
from isr.ingest.encoded_world import encoded_queries
from isr.plugin import EmbeddedIndex, SearchOptions, open_backend, search


def test_open_backend_searches_a_directory_like_the_index_itself(
    world_index: EmbeddedIndex,
) -> None:
    queries, _ = encoded_queries(world_index.world, 3, seed=5)  # type: ignore[attr-defined]
    opt = SearchOptions(size=5, num_candidates=200, rerank_window=50)
    with open_backend(world_index.path) as backend:
        for i in range(len(queries)):
            got = search(backend, queries[i : i + 1], opt)
            want = search(world_index, queries[i : i + 1], opt)
            assert [h.id for h in got.hits] == [h.id for h in want.hits]


def test_open_backend_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        open_backend(tmp_path / "nothing")
    with pytest.raises(InvalidInput, match="lowercase"):
        open_backend("http://localhost:9200/Gallery")
    with pytest.raises(InvalidInput, match="names no Elasticsearch index"):
        open_backend("http://localhost:9200/")
