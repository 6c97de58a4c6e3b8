"""Session 4: where the CPU of an ingest of pre-encoded items goes, per document, at the defaults
(fp16 fragments, flat HNSW): the Parquet -> index run of eval/bench_ingest.py (256-d fast,
32 x 256-d fragments, batch 256, commit every 10,000), with the loader's thread under cProfile
and the background HNSW insertion timed in its own thread (thread_time).
usage: prof_ingest.py n workdir [threads]; env NOPROF=1: no profiler (for A/B runs of two trees,
run with PYTHONPATH at each: s4/ingest_ab.sh)"""
import cProfile, os, pstats, shutil, sys, time
from pathlib import Path
from isr.app.runtime import set_threads
from isr.eval.bench_ingest import _dims_world
from isr.ingest.encoded_export import ParquetWriter
from isr.ingest.encoded_file import EncodedFileSource
from isr.ingest.encoded_world import BLOCK, encoded_gallery
from isr.ingest.loader import IngestOptions, load_gallery
from isr.plugin.embedded.fast_index import FastIndex

n, root = int(sys.argv[1]), Path(sys.argv[2]); threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
set_threads(threads)
root.mkdir(parents=True, exist_ok=True)
f = root / f"encoded-{n}.parquet"
if not f.exists():
    with ParquetWriter(f, 256, 256) as w:
        for ids, items in encoded_gallery(_dims_world(n, 256, 256, 32), BLOCK):
            w.write(ids, items)
graph = {"cpu": 0.0, "wall": 0.0}
orig = FastIndex._insert
def timed(self, x, n_rows):
    c, t = time.thread_time(), time.perf_counter()
    orig(self, x, n_rows)
    graph["cpu"] += time.thread_time() - c; graph["wall"] += time.perf_counter() - t
FastIndex._insert = timed
target = root / "idx"
shutil.rmtree(target, ignore_errors=True)
opt = IngestOptions(batch_size=256, commit_every=10_000, max_frags=32, codec="fp16", fast_storage="flat", progress=False)
prof = cProfile.Profile(time.thread_time)  # CPU time of the loader thread (user + sys)
l0 = os.getloadavg(); c0 = time.process_time(); t0 = time.perf_counter()
if not os.environ.get("NOPROF"):
    prof.enable()
r = load_gallery(EncodedFileSource(f), str(target), None, opt)
prof.disable()
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
print(f"{r.loaded} docs: wall {wall:.1f} s ({r.loaded / wall:.0f} docs/s; w/o read {r.loaded / (wall - r.timings['read']):.0f}), "
      f"process CPU {cpu:.1f} s ({1e6 * cpu / r.loaded:.0f} us/doc), timings {dict((k, round(v, 2)) for k, v in r.timings.items())}, load {l0} -> {os.getloadavg()}")
print(f"HNSW insertion (background, FAISS threads={threads}): CPU of the calling thread {graph['cpu']:.1f} s, wall {graph['wall']:.1f} s")
if not os.environ.get("NOPROF"):
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)
