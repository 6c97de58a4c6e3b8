"""Issue 13 session 4: Table 2 at matched total epochs on the Flickr30K caption benchmark."""
import json, os, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from isr.encoders.train import TrainConfig
from isr.eval.table2 import CAPTION_ORDER, run_caption_table2
cfg = TrainConfig.from_dict(json.load(open("/tmp/enc16/cfg_flickr.json")))
T = int(sys.argv[1]); rows = sys.argv[2:] or list(CAPTION_ORDER)
for r in rows:
    t0 = time.process_time(); w0 = time.time()
    res = run_caption_table2(Path("/tmp/enc16/flickr"), Path("/tmp/enc16/ft2"), cfg, T, rows=[r])
    rec = res["recall"].get(r, {})
    print(f"ROW {r}: cpu {time.process_time()-t0:.0f} s wall {time.time()-w0:.0f} s load {os.getloadavg()[0]:.1f} "
          f"rsum {rec.get('rsum', float('nan')):.1f} t2i R@1/5/10 {rec.get('t2i_r1',0):.1f}/{rec.get('t2i_r5',0):.1f}/{rec.get('t2i_r10',0):.1f} "
          f"i2t {rec.get('i2t_r1',0):.1f}/{rec.get('i2t_r5',0):.1f}/{rec.get('i2t_r10',0):.1f}", flush=True)
print("DONE", time.strftime("%H:%M:%S"), flush=True)
