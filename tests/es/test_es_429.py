"""Real 429s: the loader against a second live node whose write pool is one thread with a queue of
one (`thread_pool.write.size: 1`, `queue_size: 1`, set through tools/es/node.sh's
ISR_ES_SETTINGS), while other clients flood it with bulks. Elasticsearch rejects writes with 429
(`es_rejected_execution_exception`); the loader's streaming_bulk retries them with backoff, and
the load ends with exactly the source's ids in Elasticsearch and in the sidecar.

Starting the second node costs ~15-30 s of the suite on a loaded 2-core machine (one node per
module). Runs where the live suite runs (ISR_ES_URL set: `make test`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from live_es import require_es

require_es()

import elasticsearch  # noqa: E402
from conftest import random_items  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402
from elasticsearch.helpers import scan  # noqa: E402

import isr.plugin.es.writer as es_writer  # noqa: E402
from isr.ingest.encoded_export import write_jsonl  # noqa: E402
from isr.ingest.encoded_file import EncodedFileSource  # noqa: E402
from isr.ingest.loader import IngestOptions, load_gallery  # noqa: E402
from isr.plugin.es.sidecar import Sidecar  # noqa: E402
from isr.plugin.writer import EsOptions  # noqa: E402

pytestmark = pytest.mark.es

NODE = Path(__file__).resolve().parents[2] / "tools" / "es" / "node.sh"
TINY_WRITE_POOL = "thread_pool.write.size: 1\nthread_pool.write.queue_size: 1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tiny_node() -> Iterator[str]:
    # under /tmp, world-traversable: the node runs as an unprivileged user when we are root
    data = Path(tempfile.mkdtemp(prefix="isr-es-429-", dir="/tmp"))
    data.chmod(0o755)
    port = _free_port()
    env = {**os.environ, "ISR_ES_SETTINGS": TINY_WRITE_POOL, "ISR_ES_HEAP": "384m"}
    try:
        r = subprocess.run([str(NODE), "start", str(data), str(port)], env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(NODE), "stop", str(data)], capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


class _Counting(Elasticsearch):
    """The loader's client, counting the 429s Elasticsearch answers its bulks with."""

    rejected = 0  # items answered 429, plus whole bulk requests answered 429

    def bulk(self, *a: Any, **kw: Any) -> Any:
        try:
            resp = super().bulk(*a, **kw)
        except elasticsearch.ApiError as e:
            if e.meta.status == 429:
                _Counting.rejected += 1
            raise
        items = resp.body.get("items", [])
        _Counting.rejected += sum(next(iter(i.values())).get("status") == 429 for i in items)
        return resp


def _flood(url: str, stop: threading.Event, got: list[int]) -> None:
    """Bulks of small documents into an index of its own, as fast as the node takes them."""
    es = Elasticsearch(url, request_timeout=60)
    name = f"isr-test-noise-{uuid.uuid4().hex[:8]}"
    ops: list[dict[str, Any]] = []
    for i in range(300):
        ops += [{"index": {"_index": name}}, {"x": i, "s": "noise " * 20}]
    try:
        while not stop.is_set():
            try:
                r = es.bulk(operations=ops)
                got[0] += int(any(next(iter(i.values())).get("status") == 429 for i in r["items"]))
            except elasticsearch.ApiError as e:
                got[0] += int(e.meta.status == 429)
    finally:
        es.close()


def test_loader_retries_real_429s_to_exactly_the_source(
    tiny_node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 3000
    items = random_items(n, seed=11)
    gallery = tmp_path / "gallery.jsonl"
    write_jsonl(gallery, [f"doc{i}" for i in range(n)], items, [{"i": i} for i in range(n)])
    name = f"isr-test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setattr(es_writer, "Elasticsearch", _Counting)
    _Counting.rejected = 0
    opt = IngestOptions(batch_size=100, commit_every=1000, progress=False, codec="fp32",
                        max_frags=4, es=EsOptions(sidecar=tmp_path / "side"))  # fmt: skip
    stop, noise = threading.Event(), [0]
    floods = [threading.Thread(target=_flood, args=(tiny_node, stop, noise)) for _ in range(3)]
    for t in floods:
        t.start()

    def calm_down() -> None:  # the flood stops once the loader has met 429s (or after 60 s)
        deadline = time.monotonic() + 60
        while _Counting.rejected < 5 and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.05)
        stop.set()

    calm = threading.Thread(target=calm_down)
    calm.start()
    client = Elasticsearch(tiny_node, request_timeout=120)
    try:
        r = load_gallery(EncodedFileSource(gallery), f"{tiny_node}/{name}", None, opt)
        assert r.complete and (r.start, r.end, r.added) == (0, n, n)
        assert _Counting.rejected >= 1, "the node never answered the loader with 429"
        assert noise[0] >= 1  # the flood was rejected too: the write queue really was full
        client.indices.refresh(index=name)
        got = sorted(h["_id"] for h in scan(client, index=name, query={"_source": False}))
        assert got == sorted(f"doc{i}" for i in range(n))  # none lost, none doubled
        with Sidecar.open(tmp_path / "side", readonly=True) as sc:
            assert sorted(sc.iter_ids()) == got
        pool = client.nodes.stats(metric="thread_pool")["nodes"].popitem()[1]["thread_pool"]
        assert pool["write"]["rejected"] >= 1
    finally:
        stop.set()
        for t in [*floods, calm]:
            t.join(timeout=120)
        client.indices.delete(index="isr-test-*", ignore_unavailable=True, allow_no_indices=True)
        client.close()
