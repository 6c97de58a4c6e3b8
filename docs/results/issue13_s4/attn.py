"""Step time (thread_time, 1 thread) of Table 2's config per model type, eager vs sdpa attention, side by side."""
import json, os, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
import isr.encoders.train as T
from isr.encoders.model import DualEncoder
from isr.encoders.losses import TripletLoss, AsymmetricLoss
from isr.ingest.training_data import load_paired
tr, vocab = load_paired(Path("/tmp/enc13/w1500"), "train", min_images=100, limit=640)
cfg = T.TrainConfig.from_dict(json.load(open("/tmp/enc14/cfg_fix.json")))
tok = T.load_tokenizer(Path("/tmp/enc14/t2fix/paper/tokenizer"))
ids, tmask = T._pretokenize(tok, tr.captions, 32)
batches = list(T._epoch_batches(tr, cfg, np.random.default_rng(0)))[:10]
res = {}
for rep in range(2):
  for typ in ("fast", "base", "inflated"):
    for impl in ("eager", "sdpa"):
        mcfg = T._model_config(cfg, typ, tok, tr, len(vocab))
        torch.manual_seed(0); model = DualEncoder(mcfg).train()
        model.bert.config._attn_implementation = impl
        for l in model.bert.encoder.layer: l.attention.self.config._attn_implementation = impl
        opt = T._optimizer(model, cfg); trip = TripletLoss(0.6); asl = AsymmetricLoss()
        tt = 0.0
        for k, (ii, ci) in enumerate(batches):
            t0 = time.thread_time()
            b = T._batch(tr, ids, tmask, ii, ci, torch.device("cpu"))
            t = model.encode_text(b.ids, b.tmask); v = model.encode_image(b.feats, b.fmask)
            loss = trip(model.similarity(t, v)) + asl(v.logits, b.labels) + asl(t.logits, b.labels)
            opt.zero_grad(); loss.backward(); opt.step()
            if k >= 2: tt += time.thread_time() - t0
        res.setdefault(f"{typ} {impl}", []).append(round(1000 * tt / (len(batches) - 2), 1))
print(json.dumps({"ms_per_step": res, "default_impl": DualEncoder(T._model_config(cfg, "base", tok, tr, len(vocab))).bert.config._attn_implementation, "load": os.getloadavg()}))
