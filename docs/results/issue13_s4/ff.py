"""Caption-benchmark F variants (issue 13 s4): stage, epochs and overrides on cfg_flickr; val = first 200 test images."""
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from isr.encoders.train import TrainConfig, train_stage
from isr.eval.caption_images import paired_split
name, stage, over = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
teacher = over.pop("_teacher", None)
base = json.load(open("/tmp/enc16/cfg_flickr.json")); base["progress"] = False; base.update(over)
cfg = TrainConfig.from_dict(base)
tr, vocab = paired_split(Path("/tmp/enc16/flickr"), "dev", Path("/work/shared/data/flickr30k/dev_caps.txt"), 10)
te, _ = paired_split(Path("/tmp/enc16/flickr"), "test", Path("/work/shared/data/flickr30k/test_caps.txt"), vocab=vocab)
val = te.select(np.arange(200))
out = Path("/tmp/enc16/ff") / name
t0 = time.process_time()
kw = {"teacher_dir": Path(teacher)} if teacher else {"tokenizer_dir": Path("/tmp/enc16/ft2/paper/tokenizer")}
train_stage(stage, cfg, tr, out, vocab=vocab, val=val, **kw)
h = json.load(open(out / "metrics.json"))["history"]
line = {"name": name, "stage": stage, "over": over, "teacher": teacher, "val_rsum": [round(x["val"]["rsum"], 1) for x in h],
        "val_t2i_r10": [round(x["val"]["t2i_r10"], 1) for x in h], "cpu_s": round(time.process_time() - t0, 1),
        "load": round(os.getloadavg()[0], 1), "at": time.strftime("%H:%M:%S")}
print(json.dumps(line)); open("/tmp/enc16/ff.jsonl", "a").write(json.dumps(line) + "\n")
