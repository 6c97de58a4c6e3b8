"""Benchmark of the gallery loader (issue 4): ingest rate with the image tower in the loop, ingest
rate of pre-encoded features (indexing only), and resident memory as the gallery grows.

Run: `isr eval bench-ingest --images 100000 --encoded 100000 --rss 100000,300000,1000000`
(prints Markdown tables; `--json FILE` saves them). Sections:

- encode+index: the synthetic world (precomp layout, m=32 regions of D=256) through the
  default bundle architecture (EncoderConfig defaults: 3 layers, hidden 256, d = 256, 539
  keyword labels; random weights, which encode exactly as fast as trained ones) into a new
  embedded index, via :func:`isr.ingest.loader.load_gallery`.
- indexing only: pre-encoded items of the same shapes, from Parquet, from JSONL and from
  memory (the loader and the index alone), via the same function.
- memory: pre-encoded items generated on the fly, resident set size read at each mark. The
  loader streams when RSS minus the index's own in-memory structures (the HNSW graph with
  its float32 vectors) stays flat.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from isr.encoders.bundle import Bundle
from isr.encoders.config import BundleConfig, EncoderConfig
from isr.encoders.model import DualEncoder
from isr.encoders.tokenizer import train_tokenizer
from isr.encoders.vocabulary import KeywordVocab
from isr.eval.report import markdown_table
from isr.ingest.encoded_export import ParquetWriter, write_jsonl
from isr.ingest.encoded_file import EncodedFileSource
from isr.ingest.encoded_source import EncodedSource
from isr.ingest.encoded_world import BLOCK, EncodedWorld, encoded_gallery, world_source
from isr.ingest.loader import IngestOptions, IngestReport, load_gallery
from isr.ingest.precomp_source import PrecompSource
from isr.ingest.source import SourceBatch
from isr.ingest.synthetic_world import generate_world

N_LABELS = 539  # Flickr30K's keyword vocabulary (Cao et al.)


def default_bundle(image_in_dim: int) -> Bundle:
    """The default bundle architecture with random weights."""
    tok = train_tokenizer(["a dog runs on the beach", "two cats sleep on a sofa"], 200)
    base = EncoderConfig(type="base", vocab_size=8000, image_in_dim=image_in_dim, n_labels=N_LABELS)
    fast = base.replace(type="fast", n_labels=0)
    torch.manual_seed(0)
    vocab = KeywordVocab(
        labels=tuple(f"label{i}" for i in range(N_LABELS)),
        min_images=100,
        counts=tuple(range(N_LABELS + 100, 100, -1)),
    )
    return Bundle(
        BundleConfig(base=base, fast=fast), DualEncoder(base), DualEncoder(fast), tok, vocab
    )


def rss() -> dict[str, float]:
    """This process's resident memory in MB: anonymous (heap) and file-backed, and the peak."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[key] = int(val.split()[0]) / 1024
    return out


class Metered:
    """A source wrapper that reads the resident memory when the stream passes each mark."""

    def __init__(self, inner: EncodedSource, marks: list[int]) -> None:
        self.inner, self.marks = inner, sorted(marks)
        self.modality, self.payload, self.feature_dim = "image", "encoded", None
        self.readings: list[tuple[int, dict[str, float], float]] = []
        self.t0 = time.perf_counter()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def size(self) -> int:
        return self.inner.size()

    def batches(self, batch_size: int, start: int = 0) -> Iterator[SourceBatch]:
        todo = list(self.marks)
        for b in self.inner.batches(batch_size, start):
            # b.start items are written (and committed at each commit_every) when b is asked for
            while todo and b.start >= todo[0]:
                self._read(todo.pop(0))
            yield b
        self._read(self.size())  # the last batch handed out: the index is still open

    def _read(self, n: int) -> None:
        self.readings.append((n, rss(), time.perf_counter() - self.t0))
        print(f"mark {self.readings[-1]}", flush=True)  # survives an interrupted run


def _row(name: str, r: IngestReport, wall: float, n_note: str = "") -> list[Any]:
    """One table row. wall: the load_gallery call's own wall time, which includes closing the
    writer (the HNSW insertion of the last commit, which ran behind the loader, and the graph
    snapshot): the rates count it, so no indexing work is left outside the clock."""
    t = r.timings
    loader_s = wall - t["read"]
    return [name + n_note, r.loaded, r.loaded / wall, r.loaded / loader_s, t["read"],
            t["encode"], t["index"], t["commit"], wall - r.seconds,
            r.bytes_per_document or 0.0]  # fmt: skip


HEADERS = ["run", "docs", "docs/s", "docs/s w/o read", "read s", "check+encode s", "index s",
           "commit s", "close s", "bytes/doc"]  # fmt: skip


def _timed_load(*args: Any) -> tuple[IngestReport, float]:
    t = time.perf_counter()
    r = load_gallery(*args)
    return r, time.perf_counter() - t


def bench_encode(root: Path, n: int, batch: int, commit_every: int) -> list[Any]:
    world = root / "world"
    if (
        not (world / "world.json").exists()
        or json.loads((world / "world.json").read_text())["sizes"].get("test") != n
    ):
        shutil.rmtree(world, ignore_errors=True)
        t = time.perf_counter()
        generate_world(world, n_train=0, n_dev=0, n_test=n, seed=0, m=32, D=256)
        print(f"world of {n} images written in {time.perf_counter() - t:.0f} s", flush=True)
    bundle = default_bundle(256)
    target = root / "idx-encode"
    shutil.rmtree(target, ignore_errors=True)
    opt = IngestOptions(batch_size=batch, commit_every=commit_every)
    r, wall = _timed_load(PrecompSource(world, "test"), str(target), bundle, opt)
    return _row("world -> bundle -> index", r, wall)


def _dims_world(n: int, d_fast: int, d_frag: int, n_frags: int) -> EncodedWorld:
    return EncodedWorld(n_docs=n, d_fast=d_fast, d_frag=d_frag, n_frags=n_frags,
                        n_labels=N_LABELS)  # fmt: skip


def bench_indexing(
    root: Path,
    n: int,
    fmt: str,
    batch: int,
    commit_every: int,
    dims: tuple[int, int, int],
    codec: str = "fp16",
    fast_storage: str = "flat",
) -> list[Any]:
    world = _dims_world(n, *dims)
    target = root / f"idx-{fmt}"
    shutil.rmtree(target, ignore_errors=True)
    opt = IngestOptions(batch_size=batch, commit_every=commit_every, max_frags=dims[2],
                        codec=codec, fast_storage=fast_storage)  # fmt: skip
    tag = f" ({codec}, {fast_storage} HNSW)"
    if fmt == "memory":
        r, wall = _timed_load(world_source(world, None), str(target), None, opt)
        return _row("memory -> index" + tag, r, wall)
    f = root / f"encoded-{n}.{fmt}"
    if not f.exists():
        t = time.perf_counter()
        tmp = f.with_name(f.name + ".partial")
        if fmt == "parquet":
            with ParquetWriter(tmp, world.d_fast, world.d_frag) as w:
                for ids, items in encoded_gallery(world, BLOCK):
                    w.write(ids, items)
        else:
            tmp.unlink(missing_ok=True)
            for ids, items in encoded_gallery(world, BLOCK):
                write_jsonl(tmp, ids, items, append=True)
        tmp.replace(f)
        print(f"{f.name}: {f.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t:.0f} s")
    r, wall = _timed_load(EncodedFileSource(f), str(target), None, opt)
    return _row(f"{fmt} -> index" + tag, r, wall)


def bench_rss(
    root: Path, marks: list[int], batch: int, commit_every: int, dims: tuple[int, int, int],
    codec: str,
) -> list[list[Any]]:  # fmt: skip
    world = _dims_world(max(marks), *dims)
    target = root / "idx-rss"
    shutil.rmtree(target, ignore_errors=True)
    src = Metered(world_source(world, None), marks[:-1])  # the last mark is the end of the stream
    opt = IngestOptions(batch_size=batch, commit_every=commit_every, max_frags=dims[2],
                        codec=codec)  # fmt: skip
    before = rss()
    r = load_gallery(src, str(target), None, opt)
    # FAISS IndexHNSWFlat in memory: float32 vectors + level-0 links (2M ids) + upper levels
    # (~M ids / (M - 1) per vector on average) + per-vector bookkeeping (levels, offsets).
    per_vec = 4 * dims[0] + 4 * 2 * 16 + 4 * 16 / 15 + 4 + 8
    rows = []
    for n, m, t in src.readings:
        hnsw = n * per_vec / 2**20
        rows.append([n, t, n / t, m["VmRSS"], m["RssAnon"], m["RssFile"], m["VmHWM"], hnsw,
                     m["RssAnon"] - hnsw - before["RssAnon"]])  # fmt: skip
    print(f"memory run: {r.loaded} docs in {r.seconds:.0f} s; before: {before}")
    return rows


@dataclass(frozen=True)
class IngestBenchConfig:
    """The runs of `isr eval bench-ingest` (0 or "" skips a run)."""

    images: int = 100_000  # encode+index run
    encoded: int = 100_000  # Parquet / memory runs
    jsonl: int = 5_000  # JSONL run (big files: keep small)
    rss: str = "100000,300000,1000000"  # memory marks
    rss_dims: str = "128,128,16"  # d_fast,d_frag,n_frags
    rss_codec: str = "sq8"
    batch: int = 256
    formats: str = "memory,parquet,jsonl"  # indexing-only sources
    codec: str = "fp16"  # fragment codec of the indexing-only runs
    fast_storage: str = "flat"  # HNSW vectors: flat or sq8
    commit_every: int = 10_000
    workdir: Path | None = None  # default: a temp dir
    json: Path | None = None


def run(args: IngestBenchConfig) -> dict[str, Any]:
    """Every run of `args`; prints the tables as it goes and returns them."""
    root = args.workdir or Path(tempfile.mkdtemp(prefix="isr-bench-ingest-"))
    root.mkdir(parents=True, exist_ok=True)
    print("# isr ingest benchmark")
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, python {platform.python_version()}")  # fmt: skip
    out: dict[str, Any] = {}
    if args.rss:  # first, while the heap holds nothing from the other runs
        marks = [int(x) for x in args.rss.split(",")]
        rdims = tuple(int(x) for x in args.rss_dims.split(","))
        assert len(rdims) == 3
        rows = bench_rss(root, marks, args.batch, args.commit_every, rdims, args.rss_codec)
        heads = ["docs", "s", "docs/s", "VmRSS MB", "RssAnon MB", "RssFile MB", "peak MB",
                 "HNSW est. MB", "anon - HNSW - start MB"]  # fmt: skip
        print(f"\nmemory, pre-encoded {rdims} ({args.rss_codec}):")
        print(markdown_table(heads, rows, 0))
        out["memory"] = [dict(zip(heads, r)) for r in rows]
    dims = (256, 256, 32)  # the default bundle's d_fast, d_frag, max_frags
    rate_rows = []
    if args.images:
        rate_rows.append(bench_encode(root, args.images, args.batch, args.commit_every))
    sizes = {"memory": args.encoded, "parquet": args.encoded, "jsonl": args.jsonl}
    for fmt in args.formats.split(","):
        if sizes.get(fmt):
            rate_rows.append(
                bench_indexing(
                    root,
                    sizes[fmt],
                    fmt,
                    args.batch,
                    args.commit_every,
                    dims,
                    args.codec,
                    args.fast_storage,
                )
            )
    if rate_rows:
        print()
        print(markdown_table(HEADERS, rate_rows, 1))
    out["rates"] = [dict(zip(HEADERS, r)) for r in rate_rows]
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out
