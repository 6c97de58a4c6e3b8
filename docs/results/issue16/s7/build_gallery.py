"""Build (or reuse) the bench's 1M gallery only, as `isr bench --peers --sizes 1000000` would."""
import sys
from pathlib import Path
from isr.eval.bench import ScaleConfig, build_gallery, _cores, _keep_threads
from isr.ingest.encoded_world import EncodedWorld

n = int(sys.argv[1]); root = Path(sys.argv[2])
cfg = ScaleConfig(sizes=(n,), build_threads=0)
world = EncodedWorld(n_docs=n)
root.mkdir(parents=True, exist_ok=True)
path, build = build_gallery(root, world, cfg.index_config(world), cfg.batch, _cores(0), _keep_threads)
print(path, build, flush=True)
