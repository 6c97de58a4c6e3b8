"""Benchmark of the HTTP facade (issue 5), embedded mode: overhead over the in-process pipeline,
and a sustained-load run on loopback.

Run: `isr eval bench-facade --docs 100000 --workdir /tmp/isr-bench-facade` (prints Markdown
tables; `--json FILE` saves them). The index (the seeded synthetic encoded gallery, sources
license/year) is built once in WORKDIR and reused. The facade runs in a separate process
(`isr serve`), so client and server do not share a GIL; the client sends pre-serialised
`_search?search_pipeline=isr` bodies with `query_encoded` (no model) over keep-alive connections
and parses each JSON answer.

- overhead: p50 of `_search` over HTTP minus p50 of `search()` in this process, same queries and
  options, run one at a time;
- load: `--clients` threads, each with its own connection, for `--seconds`: QPS, p50/p99,
  errors (non-200 answers and exceptions), the server's RSS at the start and the end.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from isr.app.runtime import set_threads
from isr.eval.report import markdown_table
from isr.ingest.encoded_world import EncodedWorld, build_encoded_index, encoded_queries
from isr.plugin import EmbeddedIndex, IndexConfig, SearchOptions, search
from isr.plugin.http.queryfile import query_from_json


def _bodies(world: EncodedWorld, n: int, size: int) -> list[bytes]:
    queries, _ = encoded_queries(world, n, seed=1)
    out = []
    for i in range(len(queries)):
        enc = {
            "fast": queries.fast[i].tolist(),
            "fragments": queries.fragments[i].tolist(),
            "keywords": list(queries.keywords[i].labels),
        }
        out.append(json.dumps({"size": size, "ext": {"isr": {"query_encoded": enc}}}).encode())
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Client:
    """One keep-alive connection to the facade."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def search(self, body: bytes) -> tuple[int, dict[str, Any]]:
        self.conn.request(
            "POST",
            "/gallery/_search?search_pipeline=isr",
            body=body,
            headers={"content-type": "application/json"},
        )
        r = self.conn.getresponse()
        data = r.read()
        return r.status, json.loads(data)

    def close(self) -> None:
        self.conn.close()


def _start_server(root: Path, port: int, threads: int | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "isr.app.cli"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    cmd += ["serve", "--root", str(root), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/_isr/health")
            if c.getresponse().status == 200:
                c.close()
                return proc
        except OSError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server died")
    proc.kill()
    raise RuntimeError("the facade did not come up within 120 s")


def bench_overhead(
    index: EmbeddedIndex, port: int, bodies: list[bytes], size: int, reps: int
) -> dict[str, float]:
    """The two paths in separate phases (interleaving them lets one process's spinning
    thread pools slow the other), plus a paired estimate per request: the round trip minus
    the pipeline time the server reports for that request (`isr.took_ms`)."""
    opt = SearchOptions(size=size)
    queries = [query_from_json(json.loads(b)["ext"]["isr"]["query_encoded"]) for b in bodies]
    inproc, over_http, paired = [], [], []
    want = {}
    for q in queries[:20]:  # warm up
        search(index, q, opt)
    for _ in range(reps):
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            res = search(index, q, opt)
            inproc.append(time.perf_counter() - t0)
            want[i] = [h.id for h in res.hits]
    client = Client(port)  # a fresh connection: the server drops idle ones
    for b in bodies[:20]:
        client.search(b)
    for _ in range(reps):
        for i, b in enumerate(bodies):
            t0 = time.perf_counter()
            status, got = client.search(b)
            rtt = time.perf_counter() - t0
            over_http.append(rtt)
            assert status == 200, got
            assert [h["_id"] for h in got["hits"]["hits"]] == want[i]
            paired.append(rtt - got["isr"]["took_ms"] / 1e3)
    client.close()
    p50_in, p50_http = np.percentile(inproc, 50) * 1e3, np.percentile(over_http, 50) * 1e3
    return {
        "requests": len(over_http),
        "inprocess_p50_ms": float(p50_in),
        "http_p50_ms": float(p50_http),
        "overhead_p50_ms": float(p50_http - p50_in),
        "paired_overhead_p50_ms": float(np.percentile(paired, 50) * 1e3),
        "paired_overhead_p99_ms": float(np.percentile(paired, 99) * 1e3),
    }


def bench_load(pid: int, port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    stop = time.perf_counter() + seconds
    rss_start = _rss_mb(pid)

    def worker(k: int) -> None:
        c = Client(port)
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                status, _ = c.search(bodies[i % len(bodies)])
                if status != 200:
                    errors[k] += 1
            except (OSError, http.client.HTTPException, ValueError):
                errors[k] += 1
                c.close()
                c = Client(port)
            lat[k].append(time.perf_counter() - t0)
            i += clients
        c.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    all_lat = np.concatenate([np.array(x) for x in lat]) * 1e3
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": int(all_lat.size),
        "qps": all_lat.size / elapsed,
        "p50_ms": float(np.percentile(all_lat, 50)),
        "p99_ms": float(np.percentile(all_lat, 99)),
        "errors": sum(errors),
        "rss_start_mb": rss_start,
        "rss_end_mb": _rss_mb(pid),
    }


@click.command("bench-facade", help=__doc__.split("\n")[0])
@click.option("--docs", type=int, default=100_000, show_default=True)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=Path("/tmp/isr-bench-facade"),
    show_default=True,
)
@click.option("--queries", type=int, default=100, show_default=True)
@click.option(
    "--reps", type=int, default=3, show_default=True, help="passes over the queries (overhead)"
)
@click.option("--size", type=int, default=10, show_default=True)
@click.option("--clients", type=int, default=4, show_default=True)
@click.option("--seconds", type=float, default=60.0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch/FAISS threads, both sides")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def main(
    docs: int,
    workdir: Path,
    queries: int,
    reps: int,
    size: int,
    clients: int,
    seconds: float,
    threads: int | None,
    json_path: Path | None,
) -> None:
    if threads is not None:
        set_threads(threads)

    world = EncodedWorld(n_docs=docs, seed=0)
    config = IndexConfig(
        d_fast=world.d_fast, d_frag=world.d_frag, max_frags=world.n_frags, r_i=world.r_i
    )
    root = workdir / "indices"
    root.mkdir(parents=True, exist_ok=True)
    build_encoded_index(root / "gallery", world, config).close()
    bodies = _bodies(world, queries, size)
    port = _free_port()
    server = _start_server(root, port, threads)
    try:
        with EmbeddedIndex.open(root / "gallery", readonly=True) as index:
            over = bench_overhead(index, port, bodies, size, reps)
        load = bench_load(server.pid, port, bodies, clients, seconds)
        alive = Client(port)
        status, _ = alive.search(bodies[0])
        alive.close()
        load["server_up_after"] = status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    machine += f", load average {os.getloadavg()[0]:.1f}, threads {threads or 'default'}"
    print(f"\n## Facade overhead, embedded mode, {docs} documents ({machine})\n")
    print(
        markdown_table(
            [
                "requests",
                "in-process p50 ms",
                "HTTP p50 ms",
                "overhead p50 ms",
                "paired overhead p50 ms",
                "paired overhead p99 ms",
            ],
            [
                [
                    over["requests"],
                    over["inprocess_p50_ms"],
                    over["http_p50_ms"],
                    over["overhead_p50_ms"],
                    over["paired_overhead_p50_ms"],
                    over["paired_overhead_p99_ms"],
                ]
            ],
        )
    )
    print(f"\n## Sustained load, {clients} clients, {seconds:.0f} s on loopback\n")
    print(
        markdown_table(
            ["requests", "QPS", "p50 ms", "p99 ms", "errors", "RSS start MB", "RSS end MB"],
            [
                [
                    load["requests"],
                    load["qps"],
                    load["p50_ms"],
                    load["p99_ms"],
                    load["errors"],
                    load["rss_start_mb"],
                    load["rss_end_mb"],
                ]
            ],
        )
    )
    if json_path is not None:
        json_path.write_text(json.dumps({"overhead": over, "load": load, "docs": docs}, indent=2))
