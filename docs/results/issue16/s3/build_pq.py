"""Session 3: write the PQ copy (FastIndex.build_compressed) into an existing gallery, through its FastIndex alone."""
import sys, time
from pathlib import Path
from isr.app.runtime import set_threads
from isr.plugin.config import read_manifest
from isr.plugin.embedded.fast_index import FastIndex
set_threads(1)
path = Path(sys.argv[1]); config, man = read_manifest(path)
n = (path / "fast.f32").stat().st_size // (4 * config.d_fast)
fi = FastIndex(path, config, n)
t = time.perf_counter(); c = time.thread_time(); fi.build_compressed()
print(f"built PQ copy of {fi.pq.ntotal} rows: {time.perf_counter()-t:.1f}s wall {time.thread_time()-c:.1f}s CPU")
fi.close()
