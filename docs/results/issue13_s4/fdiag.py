"""Fast-vector spread of an F stage on the caption benchmark: mean pairwise cosine (texts, images), pos-pair cosine."""
import sys, json
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from isr.encoders.checkpoint import load_encoder, TOKENIZER_DIR
from isr.encoders.tokenizer import load_tokenizer, tokenize
from isr.eval.caption_images import paired_split
d = Path(sys.argv[1])
te, _ = paired_split(Path("/tmp/enc16/flickr"), "test", Path("/work/shared/data/flickr30k/test_caps.txt"), 10)
m = load_encoder(d).eval(); tok = load_tokenizer(d / TOKENIZER_DIR)
caps = te.row_captions()[:200]
with torch.inference_mode():
    ids, mk = tokenize(tok, caps, 32)
    t = m.encode_text(ids, mk)
    f = torch.from_numpy(np.asarray(te.images[:200], dtype=np.float32))
    v = m.encode_image(f, torch.ones(f.shape[:2], dtype=torch.bool))
    # the raw first-token hidden state too
for name, x in (("text", t.fast), ("image", v.fast)):
    c = x @ x.T; n = c.shape[0]
    print(name, "mean pairwise cos", round(float((c.sum() - n) / (n * n - n)), 3))
print("pos cos", round(float((t.fast * v.fast).sum(1).mean()), 3), "text-image mean cos", round(float((t.fast @ v.fast.T).mean()), 3))
for name, o in (("text", t), ("image", v)):
    h = o.hidden[:, 0]; hn = torch.nn.functional.normalize(h, dim=-1); c = hn @ hn.T; n = c.shape[0]
    print(name, "hidden[0] mean pairwise cos", round(float((c.sum() - n) / (n * n - n)), 3))
