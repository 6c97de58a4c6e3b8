"""Loading a gallery into Elasticsearch (isr/plugin/es/writer.py) against the in-memory fake
Elasticsearch over HTTP (tests/fake_es.py), for what the live node cannot show: the rank_vectors
layout (the integ-test distribution lacks the module; its refusal is tested live), the
Authorization header the loader sends, a cluster refusing the index creation; and the target
checks, which need no server. Documents, fragments, progress, crash + --resume, re-runs, bundle
refusal and the writer's buffering run against the live node: tests/es/test_ingest_es_live.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import random_items
from elasticsearch import Elasticsearch
from fake_es import FakeEs, fake_es_app, serve

from isr.app.load import main
from isr.encoders.record import Encoded
from isr.errors import Conflict, InvalidInput
from isr.ingest.encoded_export import write_jsonl
from isr.ingest.encoded_file import EncodedFileSource
from isr.ingest.loader import IngestOptions, load_gallery
from isr.plugin import EsOptions, check_target
from isr.plugin.config import IndexConfig
from isr.plugin.es.backend import EsBackend
from isr.plugin.es.writer import parse_es_target

N = 150  # gallery size: batches of 32, commits every 64 -> positions 64, 128, 150
_names = (f"gallery{i}" for i in itertools.count())


@pytest.fixture(scope="module")
def es() -> Iterator[tuple[FakeEs, str]]:
    fake = FakeEs()
    with serve(fake_es_app(fake)) as url:
        yield fake, url


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Encoded]:
    items = random_items(N, seed=3)
    path = tmp_path_factory.mktemp("gallery") / "gallery.jsonl"
    write_jsonl(path, [f"doc{i}" for i in range(N)], items, [{"i": i} for i in range(N)])
    return path, items


def opts(es: EsOptions, **kw: Any) -> IngestOptions:
    base: dict[str, Any] = {"batch_size": 32, "commit_every": 64, "progress": False}
    return IngestOptions(**{**base, "codec": "fp32", "max_frags": 4, "es": es, **kw})


def docs_of(fake: FakeEs, name: str) -> dict[str, dict[str, Any]]:
    return fake.indices[name]["docs"]


def meta_of(fake: FakeEs, name: str) -> dict[str, Any]:
    out: dict[str, Any] = fake.indices[name]["mappings"]["_meta"]
    return out


def test_rank_vectors_layout_keeps_fragments_and_progress_in_elasticsearch(
    es: tuple[FakeEs, str], gallery: tuple[Path, Encoded]
) -> None:
    fake, url = es
    name, (path, items) = next(_names), gallery
    rv = EsOptions(fragments="rank_vectors")
    r = load_gallery(EncodedFileSource(path), f"{url}/{name}", None, opts(rv, limit=64))
    assert (r.added, r.end, r.complete, r.documents) == (64, 64, False, 64)
    d = docs_of(fake, name)["doc9"]
    real = items.fragments[9][items.mask[9]]
    np.testing.assert_allclose(d["isr"]["fragments"], real, rtol=1e-6, atol=1e-7)

    meta = meta_of(fake, name)
    assert meta["isr"]["layout"]["fragments"] == "rank_vectors"  # untouched by progress updates
    (entry,) = meta["isr_app"]["ingest"]["sources"]
    assert entry["position"] == 64 and not entry["complete"]

    r2 = load_gallery(EncodedFileSource(path), f"{url}/{name}", None, opts(rv, resume=True))
    assert (r2.start, r2.end, r2.added, r2.replaced, r2.complete) == (64, N, N - 64, 0, True)
    assert len(docs_of(fake, name)) == N
    assert meta_of(fake, name)["isr_app"]["ingest"]["sources"][0]["position"] == N

    with pytest.raises(Conflict, match="keeps its fragments in rank_vectors"):
        load_gallery(EncodedFileSource(path), f"{url}/{name}", None,
                     opts(EsOptions(sidecar=Path("/nonexistent"))))  # fmt: skip


def test_target_urls_and_options_are_checked(tmp_path: Path) -> None:
    side = EsOptions(sidecar=tmp_path / "side")
    assert parse_es_target("http://h:9200/gallery") == ("http://h:9200", "gallery")
    assert parse_es_target("https://u:p@h/es/gallery/") == ("https://u:p@h/es", "gallery")
    for url in ("http://localhost:9200", "http://localhost:9200/"):
        with pytest.raises(InvalidInput, match=r"names no Elasticsearch index.*/gallery"):
            check_target(url, side)
    with pytest.raises(InvalidInput, match="lowercase"):
        check_target("http://h:9200/Gallery", side)
    with pytest.raises(InvalidInput, match="cannot start"):
        check_target("http://h:9200/_all", side)
    with pytest.raises(InvalidInput, match="pass --sidecar DIR"):
        check_target("http://h:9200/gallery", EsOptions())
    with pytest.raises(InvalidInput, match="drop --sidecar"):
        check_target("http://h:9200/gallery", EsOptions(tmp_path, "rank_vectors"))
    with pytest.raises(InvalidInput, match="not an index directory"):
        check_target(tmp_path / "idx", side)
    with pytest.raises(InvalidInput, match="--es-fragments 'es'"):
        EsOptions(fragments="es")
    out = CliRunner().invoke(
        main, ["encoded", str(tmp_path), "--index", "http://localhost:9200/", "--no-progress"]
    )
    assert out.exit_code == 2 and "names no Elasticsearch index" in out.output


def test_command_line_loads_into_elasticsearch_with_an_api_key(
    es: tuple[FakeEs, str], gallery: tuple[Path, Encoded], tmp_path: Path
) -> None:
    fake, url = es
    name, (path, _) = next(_names), gallery
    n = len(fake.auth)
    args = ["encoded", str(path), "--index", f"{url}/{name}", "--sidecar", str(tmp_path / "s"),
            "--batch-size", "50", "--max-frags", "4", "--no-progress"]  # fmt: skip
    out = CliRunner().invoke(main, args, env={"ISR_ES_API_KEY": "loader-key"})
    assert out.exit_code == 0, out.output
    assert f"({N:,} new, 0 replaced)" in out.output and "(complete)" in out.output
    assert set(fake.auth[n:]) == {"ApiKey loader-key"}
    assert len(docs_of(fake, name)) == N
    out = CliRunner().invoke(main, [*args[:4], "--no-progress"])  # no --sidecar
    assert out.exit_code != 0 and "--sidecar" in out.output


def test_a_failed_index_creation_leaves_no_sidecar_behind(
    es: tuple[FakeEs, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = es
    client = Elasticsearch(url)

    def refuse(**kw: Any) -> None:
        raise RuntimeError("cluster says no")

    monkeypatch.setattr(client.indices, "create", refuse)
    config = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3)
    with pytest.raises(RuntimeError, match="cluster says no"):
        EsBackend.create(client, next(_names), config, sidecar_path=tmp_path / "side")
    assert not (tmp_path / "side").exists()  # a retry is not refused for a stale sidecar
    client.close()
