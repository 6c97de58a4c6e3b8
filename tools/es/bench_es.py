"""Embedded vs Elasticsearch on one synthetic gallery: load rate, query latency (in process and
through the facade in ES mode), recall@10 of the full pipeline vs exhaustive max-sim, bytes/item.

    ISR_ES_JIT=full ISR_ES_HEAP=1g tools/es/node.sh run build/es/bench 9253 -- \\
        env PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python tools/es/bench_es.py --docs 10000

Needs ISR_ES_URL (node.sh run sets it). Time it on a node with the full JIT (`ISR_ES_JIT=full`):
the test node's C1-only JIT leaves Lucene's vector code uncompiled and HNSW indexing ~4x slower.
Progress (documents indexed, rate, segments, load average every 20 s) and each finished figure
go to stderr as JSON lines; the result is one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from elasticsearch import Elasticsearch

from isr.eval.bench import exhaustive_truth
from isr.ingest.encoded_source import fill_index
from isr.ingest.encoded_world import EncodedWorld, encoded_queries, world_source
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.es.backend import EsBackend
from isr.plugin.es.mapping import EsLayout
from isr.plugin.http.server import ServerConfig, create_app, serve_in_thread
from isr.plugin.pipeline import SearchOptions, search


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.array(xs) * 1e3
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
    }


def _du(p: Path) -> int:
    return int(
        subprocess.run(["du", "-sb", str(p)], capture_output=True, text=True).stdout.split()[0]
    )


def _log(**kw: Any) -> None:
    print(json.dumps({"utc": time.strftime("%H:%M:%S", time.gmtime()), **kw}), file=sys.stderr,
          flush=True)  # fmt: skip


def _watch(es: Elasticsearch, name: str, stop: threading.Event) -> None:
    """Log the index's progress while it loads (documents indexed, not yet searchable)."""
    last, t_last = 0, time.perf_counter()
    while not stop.wait(20):
        try:
            s = es.indices.stats(index=name, metric="indexing,segments")["_all"]["primaries"]
        except Exception as e:  # the index may not exist yet
            _log(watch=str(e)[:100])
            continue
        k, now = s["indexing"]["index_total"], time.perf_counter()
        _log(es_indexed=k, docs_s=round((k - last) / (now - t_last), 1),
             segments=s["segments"]["count"], load=os.getloadavg()[0])  # fmt: skip
        last, t_last = k, now


def _settle(es: Elasticsearch, name: str, limit: float = 300.0) -> float:
    """Wait (at most `limit` s) until the index runs no merge; returns the seconds waited."""
    t = time.perf_counter()
    while time.perf_counter() - t < limit:
        m = es.indices.stats(index=name, metric="merge")["_all"]["primaries"]["merges"]
        if not m["current"]:
            break
        time.sleep(2)
    return round(time.perf_counter() - t, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--batch", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    url = os.environ["ISR_ES_URL"]
    world = EncodedWorld(n_docs=a.docs)
    cfg = IndexConfig(
        d_fast=world.d_fast, d_frag=world.d_frag, max_frags=world.n_frags, r_i=world.r_i
    )
    work = Path(tempfile.mkdtemp(prefix="isr-bench-es-"))
    es = Elasticsearch(url, request_timeout=600)
    name = f"isr-bench-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {"docs": a.docs, "queries": a.queries, "es_version": None}
    out["es_version"] = es.nodes.info(filter_path="nodes.*.version")["nodes"].popitem()[1][
        "version"
    ]
    out["load_before"] = os.getloadavg()
    try:
        t = time.perf_counter()
        emb = EmbeddedIndex.create(work / "emb", cfg)
        fill_index(emb, world_source(world), a.batch, commit_every=10 * a.batch)
        out["embedded_load_docs_s"] = round(a.docs / (time.perf_counter() - t), 1)
        _log(embedded_load_docs_s=out["embedded_load_docs_s"], load=os.getloadavg()[0])
        t = time.perf_counter()
        esb = EsBackend.create(es, name, cfg, EsLayout(replicas=0), work / "side" / name)
        stop = threading.Event()
        watch = threading.Thread(target=_watch, args=(es, name, stop), daemon=True)
        watch.start()
        try:
            fill_index(esb, world_source(world), a.batch, commit_every=10 * a.batch)
        finally:
            stop.set()
        out["es_load_docs_s"] = round(a.docs / (time.perf_counter() - t), 1)
        out["load_after_es_load"] = os.getloadavg()
        _log(es_load_docs_s=out["es_load_docs_s"], load=os.getloadavg()[0])
        es.indices.refresh(index=name)
        out["merge_wait_s"] = _settle(es, name)  # background merges after the load: let them end
        queries, _ = encoded_queries(world, a.queries, seed=11)
        truth = exhaustive_truth(emb, queries, 10)
        opt = SearchOptions()
        app = create_app(ServerConfig(es_url=url, sidecar_root=work / "side"))
        with serve_in_thread(app) as f, httpx.Client(timeout=120) as h:

            def facade(i: int) -> list[str]:
                q = queries[i]
                enc = {"fast": q.fast[0].tolist(), "fragments": q.fragments[0][q.mask[0]].tolist(),
                       "keywords": list(q.keywords[0].labels)}  # fmt: skip
                body = {"size": 10, "ext": {"isr": {"query_encoded": enc}}}
                r = h.post(f"{f}/{name}/_search?search_pipeline=isr", json=body)
                assert r.status_code == 200, r.text
                return [x["_id"] for x in r.json()["hits"]["hits"]]

            runs = {
                "embedded": lambda i: [x.id for x in search(emb, queries[i], opt).hits],
                "es": lambda i: [x.id for x in search(esb, queries[i], opt).hits],
                "facade_es": facade,
            }
            # one untimed pass of every query on every path (caches warm alike), then the timed
            # pass, the three paths interleaved per query in a rotating order (no path always
            # first, a load spike hits all three)
            for i in range(a.queries):
                for run in runs.values():
                    run(i)
            lat: dict[str, list[float]] = {k: [] for k in runs}
            rec: dict[str, list[float]] = {k: [] for k in runs}
            names = list(runs)
            for i in range(a.queries):
                for k in names[i % 3 :] + names[: i % 3]:
                    t = time.perf_counter()
                    ids = runs[k](i)
                    lat[k].append(time.perf_counter() - t)
                    rec[k].append(len(set(ids) & set(truth[i])) / 10)
        for k in names:
            out[k] = {**_pct(lat[k]), "recall_at_10": round(float(np.mean(rec[k])), 4)}
            _log(**{k: out[k]}, load=os.getloadavg()[0])
        out["facade_overhead_p50_ms"] = round(out["facade_es"]["p50_ms"] - out["es"]["p50_ms"], 2)
        diff = (np.array(lat["facade_es"]) - np.array(lat["es"])) * 1e3
        out["facade_overhead_paired_median_ms"] = round(float(np.median(diff)), 2)
        out["load_after_queries"] = os.getloadavg()
        st = es.indices.stats(index=name, metric="store,docs")["_all"]["primaries"]
        out["es_store_bytes_per_item"] = round(st["store"]["size_in_bytes"] / a.docs, 1)
        out["sidecar_bytes_per_item"] = round(_du(work / "side" / name) / a.docs, 1)
        out["embedded_bytes_per_item"] = round(_du(work / "emb") / a.docs, 1)
        out["load_after"] = os.getloadavg()
        esb.close()
        emb.close()
    finally:
        es.indices.delete(index=name, ignore_unavailable=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
