"""Test-split recall (500 images) of the session-4 synthetic F variants beside the session-3 rows."""
import json
from pathlib import Path
import torch
torch.set_num_threads(1)
from isr.eval.encoder_eval import evaluate_stage
from isr.encoders.vocabulary import KeywordVocab
from isr.ingest.training_data import load_paired
runs = {"I->B->F tau_t 0.5 s0": "tt0.5", "I->B->F tau_t 0.5 s1": "s1tt0.5", "B->F tau_t 0.5 s0": "bftt0.5",
        "B->F tau_t 0.5 s1": "s1bftt0.5", "F w/o pool mean s0": "fw6pool", "F w/o pool mean s1": "s1fw6pool",
        "I->B->F tau_t 2 s0 (rerun)": "base"}
vocab = KeywordVocab.load(Path("/tmp/enc16/sf/tt0.5/keywords.json"))
test, _ = load_paired(Path("/tmp/enc13/w1500"), "test", vocab=vocab)
out = {k: evaluate_stage(Path("/tmp/enc16/sf") / d, test) for k, d in runs.items()}
json.dump(out, open("/tmp/enc16/evsyn.json", "w"), indent=2)
for k, r in out.items():
    print(k, " ".join(f"{r[x]:.1f}" for x in ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "rsum")))
