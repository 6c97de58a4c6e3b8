"""The Elasticsearch backend and the facade against a real Elasticsearch at $ISR_ES_URL.

Skipped, with the reason shown by `pytest -ra`, when ISR_ES_URL is unset. Start one with
`docker compose -f docker/docker-compose.yml up -d elasticsearch` and run
`ISR_ES_URL=http://localhost:9200 pytest tests/es -ra`. Each test creates its own indexes
(random names) and deletes them afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import live_es
import numpy as np
import pytest

ES_URL = live_es.require_es()
client = live_es.client  # the shared fixture (pytest finds it by name)

import elasticsearch  # noqa: E402
from conftest import fill  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402
from fake_es import serve  # noqa: E402

from isr.errors import InvalidInput  # noqa: E402
from isr.ingest.encoded_world import EncodedWorld, encoded_queries  # noqa: E402
from isr.plugin.config import IndexConfig  # noqa: E402
from isr.plugin.embedded.index import EmbeddedIndex  # noqa: E402
from isr.plugin.es.backend import (  # noqa: E402
    RANK_VECTORS_MODULES,
    EsBackend,
    cluster_modules,
)
from isr.plugin.es.mapping import EsLayout  # noqa: E402
from isr.plugin.http.server import ServerConfig, create_app  # noqa: E402
from isr.plugin.pipeline import SearchOptions, search  # noqa: E402

pytestmark = pytest.mark.es

WORLD = EncodedWorld(
    n_docs=800, d_fast=64, d_frag=16, n_frags=8, n_labels=40, r_i=6, seed=5, query_noise=1.0
)
CONFIG = IndexConfig(d_fast=64, d_frag=16, max_frags=8, r_i=6, codec="fp32")


def _fill(b: EsBackend | EmbeddedIndex) -> None:
    fill(b, WORLD, 400)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedIndex]:
    idx = EmbeddedIndex.create(tmp_path_factory.mktemp("emb") / "w", CONFIG)
    _fill(idx)
    yield idx
    idx.close()


@pytest.fixture(params=["sidecar", "rank_vectors"])
def backend(request, client: Elasticsearch, tmp_path: Path) -> Iterator[EsBackend]:
    name = f"isr-test-{uuid.uuid4().hex[:10]}"
    layout = EsLayout(vector_index="hnsw", fragments=request.param, replicas=0)
    if request.param == "rank_vectors":
        missing = [m for m in RANK_VECTORS_MODULES if m not in cluster_modules(client)]
        if missing:  # e.g. the integ-test distribution: no rank-vectors, no lang-painless
            with pytest.raises(InvalidInput, match=missing[0]):  # refused, naming it
                EsBackend.create(client, name, CONFIG, layout, tmp_path / "side")
            assert not client.indices.exists(index=name)
            pytest.skip(f"this cluster lacks the module(s) {', '.join(missing)}")
    b = EsBackend.create(client, name, CONFIG, layout, tmp_path / "side")
    try:
        _fill(b)
        yield b
    finally:
        b.close()
        client.indices.delete(index=name, ignore_unavailable=True)


def test_pipeline_agrees_with_embedded(backend: EsBackend, embedded: EmbeddedIndex) -> None:
    queries, truth = encoded_queries(WORLD, 10, seed=3)
    found = 0
    cc0 = {"term": {"license": "cc0"}}
    runs = [("full", None, 20_000), ("full", cc0, 20_000), ("full", cc0, 0), ("fast", None, 0)]
    for ablation, filt, exact_threshold in runs:  # 20_000: filtered = exact; 0: HNSW + filter
        opt = SearchOptions.for_ablation(
            ablation, size=10, rerank_window=50, num_candidates=800, filter=filt
        )
        opt = dataclasses.replace(opt, exact_threshold=exact_threshold)
        for i in range(len(queries)):
            got, want = search(backend, queries[i], opt), search(embedded, queries[i], opt)
            assert got.total == want.total and got.profile.gallery == want.profile.gallery
            ids = {h.id for h in got.hits}
            overlap = len(ids & {h.id for h in want.hits}) / len(want.hits)
            assert overlap >= 0.8, (ablation, i, overlap)
            mine = {h.id: h for h in want.hits}
            for h in got.hits:
                if h.id in mine and h.maxsim_score is not None:
                    assert h.maxsim_score == pytest.approx(mine[h.id].maxsim_score, rel=1e-4)
                if filt:
                    assert h.source["license"] == "cc0"
            found += (truth[i] in ids) * (filt is None or exact_threshold > 0)
    assert found >= 20  # over the three runs other than HNSW + filter


def test_facade_and_check(backend: EsBackend, tmp_path: Path) -> None:
    q = encoded_queries(WORLD, 1, seed=8)[0]
    enc = {
        "fast": q.fast[0].tolist(),
        "fragments": q.fragments[0].tolist(),
        "keywords": list(q.keywords[0].labels),
    }
    side_root = None if backend.sidecar is None else backend.sidecar.path.parent
    if backend.sidecar is not None:  # the facade finds sidecars by index name
        (side_root / backend.index).symlink_to(backend.sidecar.path)
    with serve(create_app(ServerConfig(es_url=ES_URL, sidecar_root=side_root))) as url:
        r = httpx.post(
            f"{url}/{backend.index}/_search?search_pipeline=isr",
            json={"size": 3, "ext": {"isr": {"query_encoded": enc}}},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert len(r.json()["hits"]["hits"]) == 3
        count = httpx.get(f"{url}/{backend.index}/_count", timeout=60).json()
        assert count["count"] == WORLD.n_docs
        # the official client through the facade: the pipeline via ext.isr, the rest proxied
        es = Elasticsearch(url, request_timeout=120)
        got = es.search(index=backend.index, size=3, ext={"isr": {"query_encoded": enc}})
        assert len(got["hits"]["hits"]) == 3 and "isr" in got
        plain = {"size": 4, "query": {"term": {"license": "cc0"}}, "sort": ["_doc"]}
        via = es.search(index=backend.index, **plain)
        direct = backend.client.search(index=backend.index, **plain)
        assert [h["_id"] for h in via["hits"]["hits"]] == [h["_id"] for h in direct["hits"]["hits"]]
        assert "isr" not in via and via["hits"]["total"] == direct["hits"]["total"]
        assert es.count(index=backend.index)["count"] == WORLD.n_docs
        with pytest.raises(elasticsearch.NotFoundError):  # errors come back as Elasticsearch's
            es.indices.get_mapping(index=f"{backend.index}-missing")
        es.close()
        ready = httpx.get(f"{url}/_isr/ready", timeout=60)
        assert ready.status_code == 200 and ready.json()["elasticsearch"] == "reachable"
    assert backend.check().consistent
    backend.client.delete(index=backend.index, id="doc-0000001", refresh=True)
    report = backend.check()
    if backend.sidecar is not None:
        assert report.orphan_fragments == ("doc-0000001",)
        assert backend.check(repair=True).deleted_orphans == 1
    assert backend.check().consistent
    with pytest.raises(elasticsearch.NotFoundError):
        backend.client.get(index=backend.index, id="doc-0000001")
    assert np.isfinite(len(backend))


def test_load_gallery_into_elasticsearch_resumes_to_exactly_the_gallery(
    client: Elasticsearch, tmp_path: Path
) -> None:
    """`load_gallery` with an http target: a crash after the first commit, then --resume, leaves
    exactly the gallery in the cluster and the sidecar; a gallery item finds itself first."""
    from conftest import random_items

    from isr.ingest.encoded_export import write_jsonl
    from isr.ingest.encoded_file import EncodedFileSource
    from isr.ingest.loader import IngestOptions, load_gallery
    from isr.plugin.es.sidecar import Sidecar
    from isr.plugin.writer import EsOptions

    n = 150
    items = random_items(n, seed=3)
    gallery = tmp_path / "gallery.jsonl"
    write_jsonl(gallery, [f"doc{i}" for i in range(n)], items, [{"i": i} for i in range(n)])
    name = f"isr-test-{uuid.uuid4().hex[:10]}"
    target = f"{ES_URL.rstrip('/')}/{name}"
    es_opts = EsOptions(sidecar=tmp_path / "side", api_key=os.environ.get("ISR_ES_API_KEY"))
    opt = IngestOptions(batch_size=32, commit_every=64, progress=False, codec="fp32",
                        max_frags=4, es=es_opts)  # fmt: skip

    class Crashing(EncodedFileSource):
        def batches(self, batch_size, start=0):  # type: ignore[no-untyped-def]
            for i, b in enumerate(super().batches(batch_size, start)):
                if i == 3:  # after the first commit (64 items = 2 batches)
                    raise RuntimeError("disk on fire")
                yield b

    try:
        with pytest.raises(RuntimeError, match="disk on fire"):
            load_gallery(Crashing(gallery), target, None, opt)
        client.indices.refresh(index=name)
        assert client.count(index=name)["count"] == 64
        r = load_gallery(
            EncodedFileSource(gallery), target, None, dataclasses.replace(opt, resume=True)
        )
        assert (r.start, r.end, r.complete) == (64, n, True)
        client.indices.refresh(index=name)
        assert client.count(index=name)["count"] == n
        with Sidecar.open(tmp_path / "side", readonly=True) as sc:
            assert len(sc) == n
        with EsBackend.open(client, name, tmp_path / "side") as b:
            res = search(b, items[7:8], SearchOptions(size=3, use_keywords=False))
            assert res.hits[0].id == "doc7"
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)


def test_sigkill_then_resume_into_elasticsearch_gives_exactly_the_gallery(
    client: Elasticsearch, tmp_path: Path
) -> None:
    """`ingest/load_gallery.py` into Elasticsearch + a sidecar, killed with SIGKILL mid-load,
    then --resume: the cluster and the sidecar hold exactly the source's ids, and check agrees."""
    import signal
    import subprocess
    import sys
    import time

    from click.testing import CliRunner
    from conftest import random_items
    from elasticsearch.helpers import scan

    from isr.app.load import main
    from isr.ingest.encoded_export import write_jsonl
    from isr.plugin.es.sidecar import Sidecar

    n = 3000
    gallery, side = tmp_path / "gallery.jsonl", tmp_path / "side"
    for b in range(0, n, 500):
        ids = [f"doc{i}" for i in range(b, b + 500)]
        write_jsonl(gallery, ids, random_items(500, seed=b), [{"i": i} for i in range(b, b + 500)],
                    append=True)  # fmt: skip
    name = f"isr-test-{uuid.uuid4().hex[:10]}"
    script = Path(__file__).resolve().parents[2] / "ingest" / "load_gallery.py"
    cmd = [sys.executable, str(script), "--threads", "1", "encoded", str(gallery),
           "--index", f"{ES_URL.rstrip('/')}/{name}", "--sidecar", str(side),
           "--batch-size", "50", "--commit-every", "200", "--max-frags", "4", "--no-progress",
           "--codec", "fp32"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            if client.indices.exists(index=name):
                client.indices.refresh(index=name)
                if client.count(index=name)["count"] >= 500:
                    break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        client.indices.refresh(index=name)
        assert 0 < client.count(index=name)["count"] < n  # killed mid-load

        out = CliRunner().invoke(main, [*cmd[4:], "--resume"])  # from "encoded" on
        assert out.exit_code == 0, out.output[-2000:]
        assert "(complete) [resumed]" in out.output
        client.indices.refresh(index=name)
        got = sorted(h["_id"] for h in scan(client, index=name, query={"_source": False}))
        assert got == sorted(f"doc{i}" for i in range(n))  # none missing, none extra
        with Sidecar.open(side, readonly=True) as sc:
            assert len(sc) == n
        with EsBackend.open(client, name, side) as b:
            assert b.check().consistent
        # `isr check` on the command line: drift found, then repaired (by ids)
        from isr.app.cli import main as isr_main

        client.delete(index=name, id="doc17", refresh=True)
        args = ["check", name, "--es-url", ES_URL, "--sidecar", str(side)]
        out = CliRunner().invoke(isr_main, args)
        assert out.exit_code == 0, out.output[-2000:]
        got = json.loads(out.output)
        assert (got["orphan_fragments"], got["orphan_fragments_ids"]) == (1, ["doc17"])
        assert not got["consistent"]
        out = CliRunner().invoke(isr_main, [*args, "--repair"])
        assert out.exit_code == 0 and json.loads(out.output)["deleted_orphans"] == 1
        got = json.loads(CliRunner().invoke(isr_main, args).output)
        assert got["consistent"] and got["fragment_documents"] == n - 1
    finally:
        if proc.poll() is None:
            proc.kill()
        client.indices.delete(index=name, ignore_unavailable=True)


def _settings(client: Elasticsearch, name: str) -> dict[str, object]:
    got = client.indices.get_settings(index=name, flat_settings=True)[name]["settings"]
    return {k: got.get(f"index.{k}") for k in ("refresh_interval", "number_of_replicas")}


def test_bulk_load_settings_hold_during_the_load_and_are_restored(
    client: Elasticsearch, tmp_path: Path
) -> None:
    """A load sets refresh_interval -1 (and replicas 0 on the index it creates) from its first
    commit on, saved in _meta.isr_app.bulk_load, and restores them at its end; a load killed
    before it restores leaves them for the next writer to restore; a load into an existing
    index keeps its replicas and gets back the refresh_interval the user had set."""
    from conftest import random_items

    from isr.ingest.encoded_export import write_jsonl
    from isr.ingest.encoded_file import EncodedFileSource
    from isr.ingest.loader import IngestOptions, load_gallery
    from isr.plugin.es.writer import EsWriter
    from isr.plugin.writer import EsOptions

    n = 128
    items = random_items(n, seed=4)
    gallery = tmp_path / "gallery.jsonl"
    write_jsonl(gallery, [f"doc{i}" for i in range(n)], items, [{"i": i} for i in range(n)])
    name = f"isr-test-{uuid.uuid4().hex[:10]}"
    target = f"{ES_URL.rstrip('/')}/{name}"
    es_opts = EsOptions(sidecar=tmp_path / "side", api_key=os.environ.get("ISR_ES_API_KEY"))
    opt = IngestOptions(batch_size=32, commit_every=32, progress=False, codec="fp32",
                        max_frags=4, es=es_opts, prefetch=False)  # fmt: skip
    seen: list[dict[str, object]] = []

    class Watching(EncodedFileSource):
        def batches(self, batch_size, start=0):  # type: ignore[no-untyped-def]
            for i, b in enumerate(super().batches(batch_size, start)):
                if i == 2:  # after the first commits
                    seen.append(_settings(client, name))
                    meta = client.indices.get_mapping(index=name)[name]["mappings"]["_meta"]
                    seen.append(meta["isr_app"]["bulk_load"])
                yield b

    try:
        r = load_gallery(Watching(gallery), target, None, opt)
        assert r.complete and r.documents == n
        assert seen == [
            {"refresh_interval": "-1", "number_of_replicas": "0"},
            {"refresh_interval": None, "number_of_replicas": "1"},  # ES's defaults, saved
        ]
        assert _settings(client, name) == {"refresh_interval": None, "number_of_replicas": "1"}
        w = EsWriter.open(target, es_opts)
        assert w is not None
        assert w.backend.mapping_app_meta()["bulk_load"] is None
        # a load killed after its first commit (nothing restored), then the next writer
        client.indices.put_settings(index=name, settings={"index": {"refresh_interval": "7s"}})
        assert w.backend.begin_bulk_load(replicas=False) == {
            "refresh_interval": "7s", "number_of_replicas": None,
        }  # fmt: skip
        assert _settings(client, name) == {"refresh_interval": "-1", "number_of_replicas": "1"}
        assert w.backend.begin_bulk_load(replicas=False)["refresh_interval"] == "7s"  # kept
        w.backend.close()  # no finish: as if killed
        w.backend.client.close()
        w = EsWriter.open(target, es_opts)
        assert w is not None
        assert _settings(client, name) == {"refresh_interval": "7s", "number_of_replicas": "1"}
        w.close()
        # into the existing index: replicas stay, the user's 7s comes back
        seen.clear()
        r = load_gallery(Watching(gallery), target, None, opt)
        assert r.replaced == n
        assert seen[0] == {"refresh_interval": "-1", "number_of_replicas": "1"}
        assert _settings(client, name) == {"refresh_interval": "7s", "number_of_replicas": "1"}
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)
