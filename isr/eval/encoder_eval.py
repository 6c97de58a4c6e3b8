"""Test-split evaluation of trained encoders: recall, keyword heads, encoding throughput.

Entry points: :func:`evaluate_stage` (R@1/5/10 both ways of one stage checkpoint, scored as
in training: max-sim over fragments for B and I, first-token cosine for F),
:func:`keyword_report` (keyword-head mAP and the R_I / R_T screen of a bundle) and
:func:`throughput` (images/s and texts/s of a bundle). ``eval/table2.py`` calls them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isr.encoders.bundle import Bundle
from isr.encoders.checkpoint import TOKENIZER_DIR, load_encoder
from isr.encoders.model import DualEncoder, TowerOutput
from isr.encoders.scoring import recall_at_k
from isr.encoders.tokenizer import load_tokenizer, tokenize
from isr.encoders.train import PairedData
from isr.errors import InvalidInput
from isr.eval.keywords import mean_average_precision, screen_stats

__all__ = ["evaluate_stage", "keyword_report", "throughput"]


def evaluate_stage(stage_dir: Path, data: PairedData, batch_size: int = 250) -> dict[str, float]:
    """recall_at_k of the stage checkpoint in ``stage_dir`` on every image and caption of
    ``data`` (the test split): keys t2i_r1 .. i2t_r10 and rsum, in percent."""
    stage_dir = Path(stage_dir)
    model = load_encoder(stage_dir).eval()
    tok = load_tokenizer(stage_dir / TOKENIZER_DIR)
    t, v = _encode(model, tok, data, batch_size)
    with torch.inference_mode():
        sims = model.similarity(t, v).float().numpy()  # (T, I)
    return recall_at_k(sims, data.caps_per_image)


def keyword_report(
    bundle_dir: Path, data: PairedData, r_i: int = 15, r_t: int = 3
) -> dict[str, Any]:
    """mAP of the bundle's image and text keyword heads on ``data`` (a text's targets are its
    image's labels, as in training), and the screen statistics of the served keywords: each
    image keeps its top ``r_i`` labels, each caption queries with its top ``r_t``."""
    if data.labels is None:
        raise InvalidInput("keyword_report: data has no keyword labels")
    bundle = Bundle.load(Path(bundle_dir))
    if bundle.keyword_vocab is None:
        raise InvalidInput(f"{bundle_dir}: the bundle has no keyword heads")
    if r_i > bundle.cfg.top_keywords:
        raise InvalidInput(f"r_i {r_i} exceeds the bundle's top_keywords {bundle.cfg.top_keywords}")
    t, v = _encode(bundle.base, bundle.tokenizer, data, 250)
    assert t.logits is not None and v.logits is not None
    y_img = np.asarray(data.labels[data.image_ids], dtype=bool)  # (I, L)
    y_txt = np.repeat(y_img, data.caps_per_image, axis=0)  # (T, L)
    img_map = mean_average_precision(v.logits.float().numpy(), y_img)
    txt_map = mean_average_precision(t.logits.float().numpy(), y_txt)
    # The screen reads the keywords the bundle serves (Encoded.keywords), not raw logits.
    index = {label: j for j, label in enumerate(bundle.keyword_vocab.labels)}
    enc_i = bundle.encode_images(_feats(data))
    enc_t = bundle.encode_texts(data.row_captions())
    gi = np.array([[index[x] for x in k.top(r_i)] for k in enc_i.keywords])  # (I, r_i)
    qt = np.array([[index[x] for x in k.top(r_t)] for k in enc_t.keywords])  # (T, r_t)
    truth = np.arange(len(enc_t.keywords)) // data.caps_per_image
    sc = screen_stats(gi, qt, truth)
    return {
        "image_head": vars(img_map),
        "text_head": vars(txt_map),
        "screen": {"r_i": r_i, "r_t": r_t, **vars(sc)},
        "n_labels": len(index),
    }


def throughput(
    bundle_dir: Path,
    data: PairedData,
    set_threads: Callable[[int], None],
    threads: Sequence[int] = (1, 2),
    batches: Sequence[int] = (256, 1),
    n_items: int = 1024,
    n_single: int = 64,
) -> dict[str, Any]:
    """Encoding speed of the bundle (B and F both run, as when serving): images/s and texts/s
    for each torch thread count and batch size; batch 1 is timed on ``n_single`` items, larger
    batches on ``n_items``. One untimed warm-up batch precedes each timing.
    ``set_threads`` is the app layer's thread rule (:func:`isr.app.runtime.set_threads`: torch
    and FAISS together), passed in because only the app sets process-wide threads; the
    process's torch thread count is restored through it afterwards."""
    bundle = Bundle.load(Path(bundle_dir))
    feats = _feats(data)
    texts = data.row_captions()
    before = torch.get_num_threads()
    rows = []
    try:
        for th in threads:
            set_threads(th)
            for b in batches:
                n = n_items if b > 1 else n_single
                fi, tx = feats[:n], texts[:n]
                bundle.encode_images(fi[:b], batch_size=b)
                bundle.encode_texts(tx[:b], batch_size=b)
                t0 = time.perf_counter()
                bundle.encode_images(fi, batch_size=b)
                t1 = time.perf_counter()
                bundle.encode_texts(tx, batch_size=b)
                t2 = time.perf_counter()
                rows.append(
                    {
                        "threads": th,
                        "batch": b,
                        "images_per_s": len(fi) / (t1 - t0),
                        "texts_per_s": len(tx) / (t2 - t1),
                    }
                )
    finally:
        set_threads(before)
    return {"rows": rows, "image_shape": list(feats.shape[1:])}


def _feats(data: PairedData) -> np.ndarray:
    return np.asarray(data.images[data.image_ids], dtype=np.float32)  # (I, m, D)


def _encode(
    model: DualEncoder, tok: Any, data: PairedData, batch_size: int
) -> tuple[TowerOutput, TowerOutput]:
    """Text and image tower outputs for every caption and image of ``data``; all captions are
    tokenised together, so every text batch has the same length and the outputs stack."""
    ids, tmask = tokenize(tok, data.row_captions(), model.cfg.max_text_len)  # (T, n)
    feats = _feats(data)
    ts, vs = [], []
    with torch.inference_mode():
        for s in range(0, ids.shape[0], batch_size):
            ts.append(model.encode_text(ids[s : s + batch_size], tmask[s : s + batch_size]))
        for s in range(0, feats.shape[0], batch_size):
            x = torch.from_numpy(feats[s : s + batch_size])
            vs.append(model.encode_image(x, torch.ones(x.shape[:2], dtype=torch.bool)))
    return _stack(ts), _stack(vs)


def _stack(outs: list[TowerOutput]) -> TowerOutput:
    logits = [o.logits for o in outs if o.logits is not None]
    return TowerOutput(
        fast=torch.cat([o.fast for o in outs]),
        frags=torch.cat([o.frags for o in outs]),
        mask=torch.cat([o.mask for o in outs]),
        logits=torch.cat(logits) if len(logits) == len(outs) else None,
    )
