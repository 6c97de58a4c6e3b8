"""The dedicated keyword-head stage: heads trained on a frozen, already trained network.

Entry point: :func:`train_heads` (one finished B stage in, a B stage directory with new heads
out, usable by :func:`isr.encoders.bundle.write_bundle`). Cao et al. continue training the
classifiers for 10 epochs on the trained retrieval network; here the towers are frozen, their
outputs are computed once (eval mode, no dropout) and only the heads train, so the stage costs
one encoding pass plus a few seconds per epoch.

Settings (:class:`HeadConfig`): the head form (``linear``, ``attn``, ``maxsim``; see
:mod:`isr.encoders.keyword_heads`), the loss (ASL gamma+ 0, gamma- 3, clip 0.05 as the paper,
or BCE as the ablation), the output bias started at the label log prior (``prior_bias``).
Every epoch logs the training loss and the held-out mAP (macro and micro) of both heads.
A stage directory with ``metrics.json`` is finished and returned untouched (rerun = resume).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from isr.encoders.checkpoint import (
    LOG_FILE,
    METRICS_FILE,
    TOKENIZER_DIR,
    load_encoder,
    save_encoder,
)
from isr.encoders.config import write_json
from isr.encoders.keyword_heads import KEYWORD_HEADS, prior_logits
from isr.encoders.losses import AsymmetricLoss
from isr.encoders.model import DualEncoder
from isr.encoders.tokenizer import load_tokenizer, tokenize
from isr.encoders.vocabulary import KEYWORDS_FILE, KeywordVocab
from isr.errors import InvalidInput

__all__ = ["HeadConfig", "encode_states", "head_scores", "train_heads"]


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters of the head stage (saved in its ``metrics.json``)."""

    head: str = "linear"
    loss: str = "asl"
    gamma_pos: float = 0.0
    gamma_neg: float = 3.0
    clip: float = 0.05
    epochs: int = 10
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    prior_bias: bool = True
    seed: int = 0
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.head not in KEYWORD_HEADS:
            raise InvalidInput(f"head {self.head!r} is not one of {KEYWORD_HEADS}")
        if self.loss not in ("asl", "bce"):
            raise InvalidInput(f"loss {self.loss!r} is not 'asl' or 'bce'")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise InvalidInput("epochs, batch_size and eval_batch_size must be >= 1")
        if self.lr <= 0:
            raise InvalidInput(f"lr must be > 0, got {self.lr}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidInput(f"head config: unknown fields {unknown}")
        return cls(**d)


@dataclass(frozen=True)
class _States:
    """What a head reads for N items: hidden states, their mask, fragments, fragment mask."""

    hs: torch.Tensor  # (N, n, H) float16 (only the first token for a linear head)
    mask: torch.Tensor  # (N, n) bool
    frags: torch.Tensor  # (N, n', d) float16 (empty unless a maxsim head)
    fmask: torch.Tensor  # (N, n') bool

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.hs[idx].float(), self.mask[idx], self.frags[idx].float(), self.fmask[idx])


def _pad_cat(xs: list[torch.Tensor], n: int) -> torch.Tensor:
    return torch.cat(
        [nn.functional.pad(x, (0, 0) * (x.ndim - 2) + (0, n - x.shape[1])) for x in xs]
    )


def encode_states(
    model: DualEncoder, head: str, texts: list[str] | None, images: Any, tok: Any, batch: int
) -> _States:
    """Frozen tower outputs of ``texts`` (with ``tok``) or of ``images`` (region features)."""
    model.eval()
    keep_all = head == "attn"
    hs, ms, fs, fms = [], [], [], []
    with torch.inference_mode():
        n = len(texts) if texts is not None else len(images)
        for s in range(0, n, batch):
            if texts is not None:
                ids, m = tokenize(tok, texts[s : s + batch], model.cfg.max_text_len)
                out = model.encode_text(ids, m)
            else:
                x = torch.from_numpy(np.asarray(images[s : s + batch], dtype=np.float32))
                out = model.encode_image(x, torch.ones(x.shape[:2], dtype=torch.bool))
            assert out.hidden is not None and out.hidden_mask is not None
            h, hm = out.hidden, out.hidden_mask
            if not keep_all:
                h, hm = h[:, :1], hm[:, :1]
            hs.append(h.half())
            ms.append(hm.bool())
            if head == "maxsim":
                fs.append(out.frags.half())
                fms.append(out.mask.bool())
    nh = max(x.shape[1] for x in hs)
    st_hs = _pad_cat(hs, nh)
    st_m = torch.cat([nn.functional.pad(x, (0, nh - x.shape[1])) for x in ms])
    if fs:
        nf = max(x.shape[1] for x in fs)
        st_f = _pad_cat(fs, nf)
        st_fm = torch.cat([nn.functional.pad(x, (0, nf - x.shape[1])) for x in fms])
    else:
        st_f = torch.zeros(st_hs.shape[0], 1, 1, dtype=torch.float16)
        st_fm = torch.ones(st_hs.shape[0], 1, dtype=torch.bool)
    return _States(st_hs, st_m, st_f, st_fm)


def head_scores(model: DualEncoder, tower: str, st: _States, batch: int) -> np.ndarray:
    """(N, L) keyword probabilities of one tower's head on precomputed states."""
    out = []
    with torch.inference_mode():
        for s in range(0, st.hs.shape[0], batch):
            idx = torch.arange(s, min(s + batch, st.hs.shape[0]))
            out.append(torch.sigmoid(model.keyword_logits(tower, *st.take(idx))).numpy())
    return np.concatenate(out)


def train_heads(
    base_dir: Path,
    out_dir: Path,
    *,
    vocab: KeywordVocab,
    train_images: Any,
    train_texts: list[str],
    train_labels: np.ndarray,
    text_image: np.ndarray,
    val_images: Any,
    val_texts: list[str],
    val_labels: np.ndarray,
    val_text_image: np.ndarray,
    cfg: HeadConfig,
    map_fn: Callable[[np.ndarray, np.ndarray], Any] | None = None,
    command: str | None = None,
    log: Callable[[str], Any] = print,
) -> Path:
    """Train new keyword heads on the frozen B of ``base_dir``; write a B stage to ``out_dir``.

    train_images (N, m, D) region features with train_labels (N, L) multi-hot; train_texts the
    captions, caption t belonging to image text_image[t] (its targets are that image's labels);
    the val_* arrays alike, for the per-epoch mAP by ``map_fn(scores, targets)`` (e.g.
    :func:`isr.eval.keywords.mean_average_precision`, which encoders may not import; it returns
    an object with ``macro`` and ``micro``). Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    if (out_dir / METRICS_FILE).exists():
        return out_dir
    if train_labels.shape[1] != len(vocab) or val_labels.shape[1] != len(vocab):
        raise InvalidInput(f"labels have {train_labels.shape[1]} columns, vocab {len(vocab)}")
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    trained = load_encoder(Path(base_dir))
    model = DualEncoder(trained.cfg.replace(n_labels=len(vocab), keyword_head=cfg.head))
    own = model.state_dict()
    keep = {k: v for k, v in trained.state_dict().items() if not k.startswith("kw_")}
    model.load_state_dict({**own, **keep})
    model.requires_grad_(False)
    params = [p for n, p in model.named_parameters() if n.startswith("kw_")]
    for p in params:
        p.requires_grad_(True)
    if cfg.prior_bias:
        prior = prior_logits(train_labels)
        with torch.no_grad():
            for head in (model.kw_text, model.kw_image):
                bias = head.bias
                assert isinstance(bias, torch.Tensor)
                bias.copy_(prior)
    tok = load_tokenizer(Path(base_dir) / TOKENIZER_DIR)
    eb = cfg.eval_batch_size
    log(f"heads: encoding {len(train_images)} + {len(val_images)} images, "
        f"{len(train_texts)} + {len(val_texts)} texts with the frozen towers")  # fmt: skip
    tr_i = encode_states(model, cfg.head, None, train_images, tok, eb)
    tr_t = encode_states(model, cfg.head, train_texts, None, tok, eb)
    va_i = encode_states(model, cfg.head, None, val_images, tok, eb)
    va_t = encode_states(model, cfg.head, val_texts, None, tok, eb)
    y_img = torch.from_numpy(np.asarray(train_labels, dtype=np.float32))
    y_txt = y_img[torch.from_numpy(np.asarray(text_image, dtype=np.int64))]
    vy_txt = np.asarray(val_labels)[np.asarray(val_text_image)]
    loss_fn: nn.Module = (
        AsymmetricLoss(cfg.gamma_pos, cfg.gamma_neg, cfg.clip)
        if cfg.loss == "asl"
        else nn.BCEWithLogitsLoss(reduction="none")
    )

    def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if cfg.loss == "asl":
            out: torch.Tensor = loss_fn(logits, y)
            return out
        return loss_fn(logits, y).sum(1).mean()  # the same scale as ASL: summed over labels

    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_i, n_t = y_img.shape[0], y_txt.shape[0]
    steps = max(1, -(-max(n_i, n_t) // cfg.batch_size))
    total = steps * cfg.epochs
    history: list[dict[str, Any]] = []
    g = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        pi, pt = torch.randperm(n_i, generator=g), torch.randperm(n_t, generator=g)
        sums = {"image": 0.0, "text": 0.0}
        for s in range(steps):
            step = epoch * steps + s
            for group in opt.param_groups:  # cosine decay to 0 over the stage
                group["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / total))
            bi = pi[(s * cfg.batch_size) % n_i :][: cfg.batch_size]
            bt = pt[(s * cfg.batch_size) % n_t :][: cfg.batch_size]
            li = loss_of(model.keyword_logits("image", *tr_i.take(bi)), y_img[bi])
            lt = loss_of(model.keyword_logits("text", *tr_t.take(bt)), y_txt[bt])
            opt.zero_grad(set_to_none=True)
            (li + lt).backward()
            opt.step()
            sums["image"] += li.item()
            sums["text"] += lt.item()
        model.eval()
        val: dict[str, float] = {}
        if map_fn is not None:
            m_i = map_fn(head_scores(model, "image", va_i, eb), val_labels)
            m_t = map_fn(head_scores(model, "text", va_t, eb), vy_txt)
            val = {"map_image": m_i.macro, "map_image_micro": m_i.micro,
                   "map_text": m_t.macro, "map_text_micro": m_t.micro}  # fmt: skip
        row = {
            "stage": f"heads-{cfg.head}-{cfg.loss}",
            "epoch": epoch + 1,
            "loss_image": sums["image"] / steps,
            "loss_text": sums["text"] / steps,
            "val": val,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        history.append(row)
        log(json.dumps(row))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    save_encoder(model, out_dir, {"epoch": str(cfg.epochs)})
    vocab.save(out_dir / KEYWORDS_FILE)
    shutil.copytree(Path(base_dir) / TOKENIZER_DIR, out_dir / TOKENIZER_DIR, dirs_exist_ok=True)
    (out_dir / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in history))
    write_json(
        out_dir / METRICS_FILE,
        {
            "stage": f"heads-{cfg.head}-{cfg.loss}",
            "model_type": model.cfg.type,
            "epochs": cfg.epochs,
            "val": history[-1]["val"],
            "history": history,
            "head_config": asdict(cfg),
            "teacher": str(base_dir),
            "n_train_images": int(n_i),
            "n_train_texts": int(n_t),
            "seconds": round(time.perf_counter() - t_start, 1),
            "command": command if command is not None else " ".join(sys.argv),
        },
    )
    return out_dir
