"""Loading a gallery into the live Elasticsearch at $ISR_ES_URL (moved from
tests/test_ingest_es.py, where the fake stood in): documents, sidecar fragments and progress
arrive where they belong, a crash and --resume give exactly the gallery, a re-run replaces, a
different bundle is refused, the writer sends nothing before a commit, and a document
Elasticsearch refuses (a real mapping error) fails the commit without advancing the progress.
What only the fake shows (the Authorization header the loader sends, the rank_vectors layout
this distribution lacks) stays in tests/test_ingest_es.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import live_es
import numpy as np
import pytest

ES_URL = live_es.require_es()
client = live_es.client  # the shared fixture (pytest finds it by name)

from conftest import random_items  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402
from elasticsearch.helpers import scan  # noqa: E402
from ingest_helpers import Crashing, tiny_bundle  # noqa: E402
from test_ingest_es import N, opts  # noqa: E402

from isr.encoders.record import Encoded  # noqa: E402
from isr.errors import Conflict, NotFound  # noqa: E402
from isr.ingest.encoded_export import write_jsonl  # noqa: E402
from isr.ingest.encoded_file import EncodedFileSource  # noqa: E402
from isr.ingest.loader import IngestOptions, load_gallery  # noqa: E402
from isr.ingest.precomp_source import PrecompSource  # noqa: E402
from isr.ingest.synthetic_world import generate_world  # noqa: E402
from isr.plugin import EsOptions, create_writer, open_writer  # noqa: E402
from isr.plugin.config import IndexConfig  # noqa: E402
from isr.plugin.es.backend import BulkIngestError, EsBackend  # noqa: E402
from isr.plugin.es.mapping import layout_of_mapping  # noqa: E402
from isr.plugin.es.sidecar import Sidecar  # noqa: E402
from isr.plugin.es.writer import EsWriter  # noqa: E402
from isr.plugin.pipeline import SearchOptions, search  # noqa: E402

pytestmark = pytest.mark.es


@pytest.fixture
def name(client: Elasticsearch) -> Iterator[str]:
    n = f"isr-test-{uuid.uuid4().hex[:10]}"
    yield n
    client.indices.delete(index=n, ignore_unavailable=True)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Encoded]:
    items = random_items(N, seed=3)
    path = tmp_path_factory.mktemp("gallery") / "gallery.jsonl"
    write_jsonl(path, [f"doc{i}" for i in range(N)], items, [{"i": i} for i in range(N)])
    return path, items


def _es(**kw: Any) -> EsOptions:
    return EsOptions(api_key=os.environ.get("ISR_ES_API_KEY"), **kw)


def docs_of(client: Elasticsearch, name: str) -> dict[str, dict[str, Any]]:
    """Every document of the index, by id (refreshed first: as a reader sees it)."""
    if not client.indices.exists(index=name):
        return {}
    client.indices.refresh(index=name)
    return {h["_id"]: h["_source"] for h in scan(client, index=name, query={"size": 500})}


def mapping_of(client: Elasticsearch, name: str) -> dict[str, Any]:
    out: dict[str, Any] = client.indices.get_mapping(index=name)[name]["mappings"]
    return out


def test_sidecar_layout_gets_documents_fragments_and_progress(
    client: Elasticsearch, name: str, gallery: tuple[Path, Encoded], tmp_path: Path
) -> None:
    path, items = gallery
    url = f"{ES_URL}/{name}"
    side = _es(sidecar=tmp_path / "side")
    r = load_gallery(EncodedFileSource(path), url, None, opts(side, fingerprint="fp-a"))
    assert (r.added, r.replaced, r.start, r.end, r.complete, r.commits) == (N, 0, 0, N, True, 3)
    assert r.documents == N and r.bytes_per_document and r.bytes_per_document > 0
    assert r.target == url

    docs = docs_of(client, name)
    assert sorted(docs) == sorted(f"doc{i}" for i in range(N))
    for i in (0, 77, N - 1):
        d = docs[f"doc{i}"]
        assert d["i"] == i and set(d["isr"]) <= {"id", "keywords", "fast"}  # fragments: sidecar
        assert d["isr"]["keywords"] == list(items.keywords[i].labels)
    got = client.mget(index=name, ids=["doc77"], source_includes=["isr.fast"])["docs"][0]
    fast = got["_source"]["isr"]["fast"]  # 9.x may keep vectors out of _source unless asked
    np.testing.assert_allclose(fast, items.fast[77], rtol=1e-6, atol=1e-7)

    mapping = mapping_of(client, name)
    config, layout = layout_of_mapping(mapping, name)  # _meta.isr intact
    assert config.bundle_fingerprint == "fp-a" and layout.fragments == "sidecar"
    app = mapping["_meta"]["isr_app"]
    assert "ingest" not in app  # the progress lives in the sidecar
    assert app == {"bulk_load": None}  # the bulk-load settings were restored at the end

    with Sidecar.open(tmp_path / "side", readonly=True) as sc:
        assert len(sc) == sc.n_rows == N and sc.es_index == name
        got_p = sc.committed_meta()["ingest"]["sources"]
        assert [(e["position"], e["complete"], e["bundle"]) for e in got_p] == [(N, True, "fp-a")]
        rows = sc.rows_of(["doc5", "doc149"])
        frags, mask = sc.gather(np.array([rows["doc5"], rows["doc149"]]))
        for k, i in enumerate((5, 149)):
            np.testing.assert_allclose(frags[k][mask[k]], items.fragments[i][items.mask[i]], 1e-6)

    with EsBackend.open(client, name, tmp_path / "side") as b:
        assert b.check().consistent
        res = search(b, items[7:8], SearchOptions(size=3, use_keywords=False))
        assert res.hits[0].id == "doc7"  # a gallery item as the query comes first


def test_crash_then_resume_gives_exactly_the_gallery_and_rerun_replaces(
    client: Elasticsearch, name: str, gallery: tuple[Path, Encoded], tmp_path: Path
) -> None:
    path, _ = gallery
    target, side = f"{ES_URL}/{name}", _es(sidecar=tmp_path / "side")
    with pytest.raises(RuntimeError, match="disk on fire"):
        # batches 0-2 read (positions 0-96), a commit at 64, batch 2 kept, then the crash
        load_gallery(Crashing(EncodedFileSource(path), 3), target, None, opts(side))
    assert sorted(docs_of(client, name)) == sorted(f"doc{i}" for i in range(64))
    with Sidecar.open(tmp_path / "side", readonly=True) as sc:
        assert len(sc) == sc.n_rows == 64  # the uncommitted batch was rolled back
        assert sc.committed_meta()["ingest"]["sources"][0]["position"] == 64

    r = load_gallery(EncodedFileSource(path), target, None, opts(side, resume=True))
    assert (r.start, r.end, r.added, r.replaced, r.resumed, r.complete) == (
        64, N, N - 64, 0, True, True,
    )  # fmt: skip
    assert sorted(docs_of(client, name)) == sorted(f"doc{i}" for i in range(N))
    with Sidecar.open(tmp_path / "side", readonly=True) as sc:
        assert len(sc) == sc.n_rows == N  # no fragment written twice

    again = load_gallery(EncodedFileSource(path), target, None, opts(side, resume=True))
    assert again.loaded == 0 and "already loaded completely" in again.note

    rerun = load_gallery(EncodedFileSource(path), target, None, opts(side))
    assert (rerun.added, rerun.replaced, rerun.documents) == (0, N, N)
    assert len(docs_of(client, name)) == N
    with EsBackend.open(client, name, tmp_path / "side") as b:
        assert b.sidecar is not None and len(b.sidecar) == N and b.check().consistent


def test_a_different_bundle_is_refused(client: Elasticsearch, name: str, tmp_path: Path) -> None:
    world = tmp_path / "world"
    generate_world(world, n_train=40, n_dev=0, n_test=0, seed=4, m=8, D=16)
    bundle, other = tiny_bundle(16), tiny_bundle(16, seed=1)
    target, side = f"{ES_URL}/{name}", _es(sidecar=tmp_path / "side")
    o = IngestOptions(batch_size=16, commit_every=32, progress=False, es=side)
    r = load_gallery(PrecompSource(world, "train"), target, bundle, o)
    assert (r.added, r.complete, r.documents) == (40, True, 40)
    doc = docs_of(client, name)["3"]
    assert len(doc["isr"]["keywords"]) == bundle.cfg.top_keywords and "captions" in doc
    with pytest.raises(Conflict, match="was filled with bundle"):
        load_gallery(PrecompSource(world, "train"), target, other, o)
    assert len(docs_of(client, name)) == 40


def test_writer_buffers_until_commit_and_refuses_existing_ids(
    client: Elasticsearch, name: str, tmp_path: Path
) -> None:
    target, side = f"{ES_URL}/{name}", _es(sidecar=tmp_path / "side")
    config = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=3, codec="fp32")
    items = random_items(10, seed=1)
    ids = [f"x{i}" for i in range(10)]

    def indexed() -> int:  # index operations the node has run on this index (realtime)
        st = client.indices.stats(index=name, metric="indexing")
        return int(st["_all"]["primaries"]["indexing"]["index_total"])

    w = create_writer(target, config, side)
    w.upsert(ids, items, [None] * 10)
    w.close()  # no commit
    assert indexed() == 0 and docs_of(client, name) == {}  # nothing was sent

    w = open_writer(target, side)
    assert isinstance(w, EsWriter) and w.progress() == {}
    assert w.stats()["documents"] == 0
    assert w.upsert(ids[:6], items[:6], [{"k": i} for i in range(6)]) == 0  # k: a long
    with pytest.raises(Conflict, match="already in Elasticsearch"):
        w.add(ids[4:], items[4:], [None] * 6)  # x4, x5 are kept, not sent yet
    w.commit({"at": 6})
    assert sorted(docs_of(client, name)) == ids[:6]
    with pytest.raises(Conflict, match="2 of 6 ids"):
        w.add(ids[4:], items[4:], [None] * 6)
    # x7's k is no number: Elasticsearch refuses it (a mapping error), the commit fails
    w.add(ids[6:], items[6:], [None, {"k": "not a number"}, None, None])
    assert w.upsert(ids[:2], items[:2], [{"k": 1}, None]) == 2
    with pytest.raises(BulkIngestError, match="x7"):
        w.commit({"at": 10})
    assert w.progress() == {"at": 6}  # not advanced past documents that failed
    stats = w.stats()
    assert stats["documents"] == 9 and set(stats["bytes"]) == {"elasticsearch", "sidecar"}
    w.close()
    with Sidecar.open(tmp_path / "side", readonly=True) as sc:
        assert sorted(sc.iter_ids()) == sorted(set(ids) - {"x7"})  # its fragments deleted

    with pytest.raises(NotFound, match="no sidecar there"):
        open_writer(target, _es(sidecar=tmp_path / "elsewhere"))
