"""Shrink-fast variants (issue 13 s4): F distilled from seed 0's I->B->F teacher (inflate2.shrink-base2),
2 epochs (its matched share), dev validation = the first 200 dev images (as Table 2)."""
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from isr.encoders.train import TrainConfig, train_stage
from isr.ingest.training_data import load_paired
name, over = sys.argv[1], json.loads(sys.argv[2] if len(sys.argv) > 2 else "{}")
teacher = Path(over.pop("_teacher", "/tmp/enc14/t2fix/matched/inflate2.shrink-base2"))
stage = over.pop("_stage", "shrink-fast")
base = json.load(open("/tmp/enc14/cfg_fix.json")); base.update({"epochs": 2}); base.update(over)
cfg = TrainConfig.from_dict(base)
tr, vocab = load_paired(Path("/tmp/enc13/w1500"), "train", min_images=100)
dev, _ = load_paired(Path("/tmp/enc13/w1500"), "dev", vocab=vocab)
val = dev.select(np.arange(200))
out = Path("/tmp/enc16/sf") / name
t0 = time.process_time()
kw = {"teacher_dir": teacher} if stage.startswith("shrink") else {"tokenizer_dir": teacher / "tokenizer"}
train_stage(stage, cfg, tr, out, vocab=vocab, val=val, **kw)
h = json.load(open(out / "metrics.json"))["history"]
line = {"name": name, "over": over, "teacher": str(teacher), "dev_rsum": [round(x["val"]["rsum"], 1) for x in h],
        "dev_t2i_r1": [round(x["val"]["t2i_r1"], 1) for x in h], "cpu_s": round(time.process_time() - t0, 1),
        "load": round(os.getloadavg()[0], 1), "at": time.strftime("%H:%M:%S")}
print(json.dumps(line)); open("/tmp/enc16/sf.jsonl", "a").write(json.dumps(line) + "\n")
