"""Table 2 seed 1: every row of /tmp/enc15/t2s1 evaluated on the test split, beside seed 0."""
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from isr.eval.encoder_eval import evaluate_stage
from isr.encoders.vocabulary import KeywordVocab
from isr.ingest.training_data import load_paired
s0 = json.load(open("docs/results/table2_matched_k32_w1500_codemean.json"))
run = Path("/tmp/enc15/t2s1")
rows = {k: v for k, v in s0["rows"].items() if (run / v / "model.safetensors").exists()}
vocab = KeywordVocab.load(run / next(iter(rows.values())) / "keywords.json")
test, _ = load_paired(Path("/tmp/enc13/w1500"), "test", vocab=vocab)
rec = {name: evaluate_stage(run / d, test) for name, d in rows.items()}
out = {"what": "Table 2 at matched total epochs (6), k=32, code_input='mean', SEED 1 (issue 13 session 3, lead); "
       "seed 0 in table2_matched_k32_w1500_codemean.json", "config": json.load(open("/tmp/enc15/cfg_s1.json")),
       "rows": rows, "recall_seed1": rec, "recall_seed0": {k: s0["recall"][k] for k in rows},
       "n_test_images": len(test), "command": "/tmp/enc15/run.sh ROWS (eval/table2.py --total-epochs 6 --row ...), then this script"}
json.dump(out, open("docs/results/table2_matched_k32_w1500_codemean_seed1.json", "w"), indent=2, sort_keys=True)
print("| model | T->I R@1 s0 / s1 | I->T R@1 s0 / s1 | rsum s0 / s1 | rsum mean +- half-spread |")
print("|---|--:|--:|--:|--:|")
for k in rows:
    a, b = s0["recall"][k], rec[k]
    print(f"| {k} | {a['t2i_r1']:.1f} / {b['t2i_r1']:.1f} | {a['i2t_r1']:.1f} / {b['i2t_r1']:.1f} | "
          f"{a['rsum']:.1f} / {b['rsum']:.1f} | {(a['rsum']+b['rsum'])/2:.1f} +- {abs(a['rsum']-b['rsum'])/2:.1f} |")
