"""One ingest run (memory -> index, indexing only) with CPU time; run from the tree to test."""
import json, os, shutil, sys, time
from pathlib import Path
from isr.app.runtime import set_threads
from isr.eval import bench_ingest as b
from isr.ingest.encoded_world import world_source
set_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
n = int(sys.argv[1]); tag = sys.argv[2]
root = Path(f"/tmp/speed_ingest_{tag}"); shutil.rmtree(root, ignore_errors=True); root.mkdir()
# the synthetic generation alone (the "read" side), CPU
w = b._dims_world(n, 256, 256, 32)
c0 = time.process_time()
for _ in world_source(w, None).batches(256):
    pass
gen = time.process_time() - c0
l0 = os.getloadavg()[0]
c0, w0 = time.process_time(), time.perf_counter()
row = b.bench_indexing(root, n, "memory", 256, 10_000, (256, 256, 32))
cpu, wall = time.process_time() - c0, time.perf_counter() - w0
out = dict(tag=tag, n=n, wall=wall, cpu=cpu, gen_cpu=gen, index_cpu_us_per_doc=(cpu - gen) / n * 1e6,
           docs_per_s=row[2], docs_per_s_wo_read=row[3], load=(l0 + os.getloadavg()[0]) / 2)
print(json.dumps(out))
shutil.rmtree(root, ignore_errors=True)
