"""Commit-to-visible latency through `isr serve` while a writer commits, and search latency
beside the same run without the writer (issue 14's figures).

Run: `python -m isr.app.bench_live --seconds 60 --clients 4 --every 0.35 --out FILE.json`.
The server runs as its own process (`isr serve`, default refresh interval); this process
holds the writer (a batch of 50 new documents, each batch with its own `batch` value, every
`--every` seconds) and the clients: `--clients` threads sending isr searches, and one
poller that asks, every 10 ms, for the newest committed batch until all its documents are
visible. Latency of a batch = first time it is fully visible - the time its commit returned.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from isr.ingest.encoded_world import EncodedWorld, encoded_gallery, encoded_queries
from isr.plugin.config import IndexConfig
from isr.plugin.embedded.index import EmbeddedIndex

WORLD = EncodedWorld(n_docs=4000, d_fast=32, d_frag=16, n_frags=8, n_labels=40, r_i=6, seed=7)
CONFIG = IndexConfig(d_fast=32, d_frag=16, max_frags=8, r_i=6, hnsw_m=16, hnsw_ef_construction=80)


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1e3, 1) if xs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _searches(url: str, body: dict[str, Any], stop: threading.Event, out: list[float],
              errors: list[str]) -> None:  # fmt: skip
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                r = c.post("/g/_search?search_pipeline=isr", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as e:
                errors.append(repr(e))
                continue
            out.append(time.perf_counter() - t)


def _phase(url: str, seconds: float, clients: int, body: dict[str, Any], writer: bool,
           path: Path, every: float) -> dict[str, Any]:  # fmt: skip
    stop = threading.Event()
    lat: list[float] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_searches, args=(url, body, stop, lat, errors), daemon=True)
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    visible: list[float] = []
    commits = 0
    if writer:
        committed: dict[int, float] = {}
        lock = threading.Lock()

        def poll() -> None:
            seen = 0
            with httpx.Client(base_url=url, timeout=30) as c:
                while not stop.is_set() or seen < commits:
                    with lock:
                        pending = sorted(b for b in committed if b > seen)
                    if not pending:
                        time.sleep(0.005)
                        continue
                    b = pending[0]
                    q = {"size": 0, "query": {"term": {"batch": b}}}
                    r = c.post("/g/_search", json=q)
                    if r.status_code == 200 and r.json()["hits"]["total"]["value"] == 50:
                        with lock:
                            visible.append(time.monotonic() - committed[b])
                        seen = b
                    else:
                        time.sleep(0.01)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        pool = [items for _, items in encoded_gallery(WORLD, 50)]
        with EmbeddedIndex.open(path) as idx:
            t_end = time.monotonic() + seconds
            b = 0
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                b += 1
                ids = [f"w{b}-{j}" for j in range(50)]
                idx.add(ids, pool[b % len(pool)], [{"batch": b}] * 50)
                idx.commit()
                with lock:
                    committed[b] = time.monotonic()
                commits = b
                time.sleep(max(0.0, every - (time.monotonic() - t0)))
        stop.set()
        poller.join(timeout=30)
    else:
        time.sleep(seconds)
        stop.set()
    for t in threads:
        t.join(timeout=30)
    return {
        "writer": writer,
        "seconds": seconds,
        "clients": clients,
        "searches": len(lat),
        "search_p50_ms": _pct(lat, 50),
        "search_p99_ms": _pct(lat, 99),
        "errors": len(errors),
        "error_examples": errors[:3],
        "commits": commits,
        "visible": len(visible),
        "visible_p50_ms": _pct(visible, 50),
        "visible_p99_ms": _pct(visible, 99),
        "visible_max_ms": _pct(visible, 100),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--every", type=float, default=0.35)
    ap.add_argument("--refresh-interval", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with EmbeddedIndex.create(root / "g", CONFIG) as idx:
            for ids, items in encoded_gallery(WORLD, 1000):
                idx.add(ids, items, [{"batch": 0}] * len(ids))
                idx.commit()
        port = _free_port()
        cmd = [sys.executable, "-m", "isr.app.cli", "--threads", "1", "serve", "--root",
               str(root), "--port", str(port), "--refresh-interval", str(a.refresh_interval)]  # fmt: skip
        server = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/_isr/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            q = encoded_queries(WORLD, 1)[0]
            body = {"size": 10, "ext": {"isr": {"query_encoded": {
                "fast": q.fast[0].tolist(), "fragments": q.fragments[0].tolist(),
                "keywords": list(q.keywords[0].labels)}}}}  # fmt: skip
            base = _phase(url, a.seconds, a.clients, body, False, root / "g", a.every)
            live = _phase(url, a.seconds, a.clients, body, True, root / "g", a.every)
        finally:
            server.terminate()
            server.wait(timeout=30)
    report = {"load": os.getloadavg(), "refresh_interval": a.refresh_interval,
              "without_writer": base, "with_writer": live}  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if a.out is not None:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
