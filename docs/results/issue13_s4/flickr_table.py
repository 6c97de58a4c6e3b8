"""Markdown table + JSON of the Flickr caption Table 2 (issue 13 s4) from /tmp/enc16/ft2."""
import json
r = json.load(open("/tmp/enc16/ft2/table2_captions.json"))
old = json.load(open("/tmp/enc16/ft2/old_first/table2_captions_first.json"))
r["first_token_rows_before_fast_pool"] = {k: old["recall"][k] for k in ("F w/o", "B->F")}
r["first_token_epochs_before_fast_pool"] = {k: old["epochs"][k] for k in ("F w/o", "B->F")}
r["note"] = ("caption-described images (not image retrieval); F rows with fast_pool 'mean' and tau_t_shrink_fast 0.5; "
             "first_token_* = the same rows read from F's first token with tau_t 2 (at chance)")
json.dump(r, open("docs/results/table2_flickr_captions.json", "w"), indent=2, sort_keys=True)
keys = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10", "rsum")
print("| model | T->I R@1 | R@5 | R@10 | I->T R@1 | R@5 | R@10 | rsum | val rsum after epoch 1 of its last stage / at the end |")
print("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
for name in ("F w/o", "B w/o", "I", "B->F", "I->B", "I->B->F"):
    if name not in r["recall"]: print(f"| {name} | not finished |"); continue
    v = r["recall"][name]; last = r["epochs"][name][-1]["val"]
    print(f"| {name} | " + " | ".join(f"{v[k]:.1f}" for k in keys) + f" | {last[0]['rsum']:.1f} / {last[-1]['rsum']:.1f} |")
for name in ("F w/o", "B->F"):
    v = old["recall"][name]; last = old["epochs"][name][-1]["val"]
    print(f"| {name}, first token{', tau_t 2' if name == 'B->F' else ''} (before) | " + " | ".join(f"{v[k]:.1f}" for k in keys) + f" | {last[0]['rsum']:.1f} / {last[-1]['rsum']:.1f} |")
