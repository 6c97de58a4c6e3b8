"""Loading a gallery into Elasticsearch (isr/plugin/es/writer.py) against the in-memory fake
Elasticsearch over HTTP (tests/fake_es.py): documents, sidecar fragments and progress arrive
where they belong, a crash and --resume give exactly the gallery, a re-run replaces, a
different bundle is refused, and nothing uncommitted reaches Elasticsearch.

Most tests load a pre-encoded JSONL gallery (exact expected values, no encoder); one loads a
precomp world through a tiny random-weight bundle, searches it, and refuses a second bundle.
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
from ingest_helpers import Crashing, tiny_bundle

from isr.app.load import main
from isr.encoders.record import Encoded
from isr.errors import Conflict, InvalidInput, NotFound
from isr.ingest.encoded_export import write_jsonl
from isr.ingest.encoded_file import EncodedFileSource
from isr.ingest.loader import IngestOptions, load_gallery
from isr.ingest.precomp_source import PrecompSource
from isr.ingest.synthetic_world import generate_world
from isr.plugin import EsOptions, check_target, create_writer, open_writer
from isr.plugin.config import IndexConfig
from isr.plugin.es.backend import BulkIngestError, EsBackend
from isr.plugin.es.mapping import layout_of_mapping
from isr.plugin.es.sidecar import Sidecar
from isr.plugin.es.writer import EsWriter, parse_es_target
from isr.plugin.pipeline import SearchOptions, search

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


def test_sidecar_layout_gets_documents_fragments_and_progress(
    es: tuple[FakeEs, str], gallery: tuple[Path, Encoded], tmp_path: Path
) -> None:
    fake, url = es
    name, (path, items) = next(_names), gallery
    side = EsOptions(sidecar=tmp_path / "side")
    r = load_gallery(EncodedFileSource(path), f"{url}/{name}", None, opts(side, fingerprint="fp-a"))
    assert (r.added, r.replaced, r.start, r.end, r.complete, r.commits) == (N, 0, 0, N, True, 3)
    assert r.documents == N and r.bytes_per_document and r.bytes_per_document > 0
    assert r.target == f"{url}/{name}"

    docs = docs_of(fake, name)
    assert sorted(docs) == sorted(f"doc{i}" for i in range(N))
    for i in (0, 77, N - 1):
        d = docs[f"doc{i}"]
        assert d["i"] == i and set(d["isr"]) == {"id", "keywords", "fast"}  # fragments: sidecar
        assert d["isr"]["keywords"] == list(items.keywords[i].labels)
        np.testing.assert_allclose(d["isr"]["fast"], items.fast[i], rtol=1e-6, atol=1e-7)

    config, layout = layout_of_mapping(fake.indices[name]["mappings"], name)  # _meta.isr intact
    assert config.bundle_fingerprint == "fp-a" and layout.fragments == "sidecar"
    app = meta_of(fake, name)["isr_app"]
    assert "ingest" not in app  # the progress lives in the sidecar
    assert app == {"bulk_load": None}  # the bulk-load settings were restored at the end
    assert fake.indices[name]["settings"] == {"index.number_of_replicas": "1"}

    with Sidecar.open(tmp_path / "side", readonly=True) as sc:
        assert len(sc) == sc.n_rows == N and sc.es_index == name
        got = sc.committed_meta()["ingest"]["sources"]
        assert [(e["position"], e["complete"], e["bundle"]) for e in got] == [(N, True, "fp-a")]
        rows = sc.rows_of(["doc5", "doc149"])
        frags, mask = sc.gather(np.array([rows["doc5"], rows["doc149"]]))
        for k, i in enumerate((5, 149)):
            np.testing.assert_allclose(frags[k][mask[k]], items.fragments[i][items.mask[i]], 1e-6)

    with EsBackend.open(Elasticsearch(url), name, tmp_path / "side") as b:
        assert b.check().consistent
        q = items[7:8]  # a gallery item as the query: it must come first
        res = search(b, q, SearchOptions(size=3, use_keywords=False))
        assert res.hits[0].id == "doc7"


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


def test_crash_then_resume_gives_exactly_the_gallery_and_rerun_replaces(
    es: tuple[FakeEs, str], gallery: tuple[Path, Encoded], tmp_path: Path
) -> None:
    fake, url = es
    name, (path, _) = next(_names), gallery
    target, side = f"{url}/{name}", EsOptions(sidecar=tmp_path / "side")
    with pytest.raises(RuntimeError, match="disk on fire"):
        # batches 0-2 read (positions 0-96), a commit at 64, batch 2 kept, then the crash
        load_gallery(Crashing(EncodedFileSource(path), 3), target, None, opts(side))
    assert sorted(docs_of(fake, name)) == sorted(f"doc{i}" for i in range(64))
    with Sidecar.open(tmp_path / "side", readonly=True) as sc:
        assert len(sc) == sc.n_rows == 64  # the uncommitted batch was rolled back
        assert sc.committed_meta()["ingest"]["sources"][0]["position"] == 64

    r = load_gallery(EncodedFileSource(path), target, None, opts(side, resume=True))
    assert (r.start, r.end, r.added, r.replaced, r.resumed, r.complete) == (
        64, N, N - 64, 0, True, True,
    )  # fmt: skip
    assert sorted(docs_of(fake, name)) == sorted(f"doc{i}" for i in range(N))
    with Sidecar.open(tmp_path / "side", readonly=True) as sc:
        assert len(sc) == sc.n_rows == N  # no fragment written twice

    again = load_gallery(EncodedFileSource(path), target, None, opts(side, resume=True))
    assert again.loaded == 0 and "already loaded completely" in again.note

    rerun = load_gallery(EncodedFileSource(path), target, None, opts(side))
    assert (rerun.added, rerun.replaced, rerun.documents) == (0, N, N)
    assert len(docs_of(fake, name)) == N
    with EsBackend.open(Elasticsearch(url), name, tmp_path / "side") as b:
        assert b.sidecar is not None and len(b.sidecar) == N and b.check().consistent


def test_a_different_bundle_is_refused(es: tuple[FakeEs, str], tmp_path: Path) -> None:
    fake, url = es
    name = next(_names)
    world = tmp_path / "world"
    generate_world(world, n_train=40, n_dev=0, n_test=0, seed=4, m=8, D=16)
    bundle, other = tiny_bundle(16), tiny_bundle(16, seed=1)
    target, side = f"{url}/{name}", EsOptions(sidecar=tmp_path / "side")
    o = IngestOptions(batch_size=16, commit_every=32, progress=False, es=side)
    r = load_gallery(PrecompSource(world, "train"), target, bundle, o)
    assert (r.added, r.complete, r.documents) == (40, True, 40)
    doc = docs_of(fake, name)["3"]
    assert len(doc["isr"]["keywords"]) == bundle.cfg.top_keywords and "captions" in doc
    with pytest.raises(Conflict, match="was filled with bundle"):
        load_gallery(PrecompSource(world, "train"), target, other, o)
    assert len(docs_of(fake, name)) == 40


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


def test_writer_buffers_until_commit_and_refuses_existing_ids(
    es: tuple[FakeEs, str], tmp_path: Path
) -> None:
    fake, url = es
    name = next(_names)
    target, side = f"{url}/{name}", EsOptions(sidecar=tmp_path / "side")
    config = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, codec="fp32")
    items = random_items(10, seed=1)
    ids = [f"x{i}" for i in range(10)]

    w = create_writer(target, config, side)
    before = len(fake.requests)
    w.upsert(ids, items, [None] * 10)
    w.close()  # no commit
    assert not any(p.endswith("_bulk") for _, p in fake.requests[before:])
    assert docs_of(fake, name) == {}

    w = open_writer(target, side)
    assert isinstance(w, EsWriter) and w.progress() == {}
    assert w.stats()["documents"] == 0
    assert w.upsert(ids[:6], items[:6], [None] * 6) == 0
    with pytest.raises(Conflict, match="already in Elasticsearch"):
        w.add(ids[4:], items[4:], [None] * 6)  # x4, x5 are kept, not sent yet
    w.commit({"at": 6})
    assert sorted(docs_of(fake, name)) == ids[:6]
    with pytest.raises(Conflict, match="2 of 6 ids"):
        w.add(ids[4:], items[4:], [None] * 6)
    w.add(ids[6:], items[6:], [None] * 4)
    assert w.upsert(ids[:2], items[:2], [{"k": 1}, None]) == 2
    fake.fail_400.add("x7")  # a mapping error on a new document: the commit fails
    with pytest.raises(BulkIngestError, match="x7"):
        w.commit({"at": 10})
    fake.fail_400.clear()
    assert w.progress() == {"at": 6}  # not advanced past documents that failed
    stats = w.stats()
    assert stats["documents"] == 9 and set(stats["bytes"]) == {"elasticsearch", "sidecar"}
    w.close()
    with Sidecar.open(tmp_path / "side", readonly=True) as sc:
        assert sorted(sc.iter_ids()) == sorted(set(ids) - {"x7"})  # its fragments deleted

    with pytest.raises(NotFound, match="no sidecar there"):
        open_writer(target, EsOptions(sidecar=tmp_path / "elsewhere"))


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
