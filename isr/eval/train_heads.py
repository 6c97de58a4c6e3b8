"""Command line of the dedicated keyword-head stage, and a bundle with the new heads.

Run: ``python eval/train_heads.py --data DIR --kind world|captions --base RUN/base
--fast RUN/shrink-fast --out RUN/heads-attn --config '{"head": "attn"}'``. Trains the heads
on the frozen B (:func:`isr.encoders.head_stage.train_heads`) and writes ``OUT/bundle``.

Data: ``world`` is a precomp folder with a train split of 5 captions per image (the synthetic
world): labels from its own captions, val = the dev split. ``captions`` is the Flickr30K
caption-described-image folder of :mod:`isr.eval.caption_images`: the dev images, their five
source captions (``--source``) as texts and label source, 10% of dev held out for the
per-epoch mAP. The vocabulary is the base stage's ``keywords.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from isr.encoders.bundle import write_bundle
from isr.encoders.head_stage import HeadConfig, train_heads
from isr.encoders.vocabulary import KEYWORDS_FILE, KeywordVocab
from isr.eval.keywords import mean_average_precision
from isr.ingest.precomp import PrecompSplit, group_captions, read_captions

__all__ = ["main"]


def main(argv: list[str] | None = None) -> Path:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--kind", choices=["world", "captions"], required=True)
    ap.add_argument("--source", type=Path, default=Path("/work/shared/data/flickr30k"))
    ap.add_argument("--base", type=Path, required=True, help="finished B stage directory")
    ap.add_argument("--fast", type=Path, required=True, help="finished F stage directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default="{}", help="HeadConfig fields as JSON")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = HeadConfig.from_dict(json.loads(a.config))
    vocab = KeywordVocab.load(a.base / KEYWORDS_FILE)
    if a.kind == "world":
        tr, va = PrecompSplit.open(a.data, "train"), PrecompSplit.open(a.data, "dev")
        c = tr.caps_per_image
        tr_caps, va_caps = list(tr.captions), list(va.captions)
        tr_im, va_im = np.asarray(tr.images), np.asarray(va.images)
        tr_y = vocab.multi_hot(group_captions(tr_caps, c))
        va_y = vocab.multi_hot(group_captions(va_caps, va.caps_per_image))
        tr_ti = np.arange(len(tr_caps)) // c
        va_ti = np.arange(len(va_caps)) // va.caps_per_image
    else:
        groups = group_captions(read_captions(a.source / "dev_caps.txt"), 5)
        ims = np.load(a.data / "dev_ims.npy")
        y = vocab.multi_hot(groups)
        perm = np.random.default_rng([cfg.seed, 7]).permutation(len(groups))
        n_val = len(groups) // 10
        vi, ti = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        tr_im, va_im, tr_y, va_y = ims[ti], ims[vi], y[ti], y[vi]
        tr_caps = [c for i in ti for c in groups[i]]
        va_caps = [c for i in vi for c in groups[i]]
        tr_ti = np.repeat(np.arange(len(ti)), 5)
        va_ti = np.repeat(np.arange(len(vi)), 5)
    out = train_heads(
        a.base, a.out, vocab=vocab, train_images=tr_im, train_texts=tr_caps, train_labels=tr_y,
        text_image=tr_ti, val_images=va_im, val_texts=va_caps, val_labels=va_y,
        val_text_image=va_ti, cfg=cfg, map_fn=mean_average_precision,
        command=" ".join(["python eval/train_heads.py", *(argv or sys.argv[1:])]),
    )  # fmt: skip
    bundle = write_bundle(out, a.fast, out / "bundle")
    print(f"bundle {bundle}")
    return bundle


if __name__ == "__main__":
    main()
