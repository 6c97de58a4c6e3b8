from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isr.encoders.record import Encoded, Keywords
from isr.ingest.encoded_source import fill_index
from isr.ingest.encoded_world import EncodedWorld, world_source
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.es.backend import EsBackend

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """One torch/FAISS thread: on a 2-core machine shared with other work, two threads per
    small GEMM spend more time waiting for each other than computing (measured 5-20x slower)."""
    from isr.app.runtime import set_threads

    set_threads(1)


def random_items(
    n: int,
    d_fast: int = 16,
    d_frag: int = 8,
    n_frags: int = 4,
    seed: int = 0,
    labels: tuple[str, ...] = ("a", "b", "c", "d"),
) -> Encoded:
    rng = np.random.default_rng(seed)
    kws = tuple(
        Keywords(tuple(rng.choice(labels, size=2, replace=False)), (0.9, 0.8)) for _ in range(n)
    )
    mask = np.ones((n, n_frags), dtype=bool)
    mask[:, n_frags // 2 + 1 :] = rng.random((n, n_frags - n_frags // 2 - 1)) < 0.5
    return Encoded(
        rng.standard_normal((n, d_fast)), rng.standard_normal((n, n_frags, d_frag)), mask, kws
    )


@pytest.fixture
def small_config() -> IndexConfig:
    return IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, hnsw_m=8, hnsw_ef_construction=40)


def two_licenses(i: int) -> dict[str, Any]:
    """The `_source` of synthetic document i in the filter tests: license and year."""
    return {"license": ("cc-by", "cc0")[i % 2], "year": 2000 + i % 20}


def fill(
    target: EmbeddedIndex | EsBackend,
    world: EncodedWorld,
    batch: int,
    source: Callable[[int], dict[str, Any]] = two_licenses,
) -> None:
    """Index every document of `world`, document i with `source(i)`, through the loader (the
    one fill path): committed batch by batch (an Elasticsearch index refreshed at each)."""
    fill_index(target, world_source(world, source), batch)


@pytest.fixture
def world_index(tmp_path: Path) -> EmbeddedIndex:
    """A 3,000-document synthetic encoded index with sources (license, year)."""
    world = EncodedWorld(
        n_docs=3000,
        d_fast=32,
        d_frag=16,
        n_frags=8,
        n_labels=60,
        r_i=6,
        seed=3,
        query_noise=1.0,
        query_frag_noise=2.0,
    )
    config = IndexConfig(
        d_fast=32, d_frag=16, max_frags=8, r_i=6, hnsw_m=16, hnsw_ef_construction=80
    )
    index = EmbeddedIndex.create(tmp_path / "world", config)
    fill(index, world, 1000)
    index.world = world  # type: ignore[attr-defined]
    yield index
    index.close()
