"""Per-epoch validation rsum (first 200 Flickr test images) of the caption Table 2's rows, F read from
its first token (old) vs the mean of its tokens (fast_pool "mean"). Reads /tmp/enc16/ft2."""
import json
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
new = json.load(open("/tmp/enc16/ft2/table2_captions.json"))["epochs"]
old = json.load(open("/tmp/enc16/ft2/old_first/table2_captions_first.json"))["epochs"]
fig, ax = plt.subplots(figsize=(7, 4.2))
def curve(ep, label, style):
    xs, ys, at = [], [], 0
    for st in ep:
        for j, v in enumerate(st["val"]):
            xs.append(at + j + 1); ys.append(v["rsum"])
        at += len(st["val"])
    ax.plot(xs, ys, style, label=label)
for name, style in (("B w/o", "k-"), ("I", "g-"), ("I->B", "g--"), ("I->B->F", "g:")):
    if name in new: curve(new[name], name, style)
curve(new["F w/o"], "F w/o, fast_pool mean", "b-")
curve(old["F w/o"], "F w/o, first token (before)", "b:")
curve(new["B->F"], "B->F (B 6 + F 6), mean, tau_t 0.5", "r-")
curve(old["B->F"], "B->F, first token, tau_t 2 (before)", "r:")
ax.axhline(16, color="grey", lw=0.8); ax.text(0.5, 20, "chance (200 images)", color="grey", fontsize=8)
ax.set_xlabel("epoch (all stages of a row, matched total 12)"); ax.set_ylabel("val rsum (200 test images)")
ax.set_title("Flickr30K caption benchmark, MiniLM text tower (2 layers), k=32")
ax.legend(fontsize=7, loc="lower right"); fig.tight_layout()
fig.savefig("docs/results/table2_flickr_captions_epochs.png", dpi=110)
