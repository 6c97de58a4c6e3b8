"""Training stages of Inflate and Shrink, with the keyword heads trained alongside.

Entry points: :func:`train_stage` (one stage into one checkpoint directory, resumable) and
:func:`run_recipe` (the paper's I -> B -> F chain, or the plain F and B rows, ending in a
bundle directory). ``isr train`` only parses arguments and calls these.

Stages (``STAGES``):

- ``inflate``:     I, k code tokens per side, max-sim over fragments incl. codes, margin 0.6.
- ``shrink-base``: B (no codes) distilled from I: triplet (0.6) + distill, tau_t = tau_s = 12.
- ``shrink-fast``: F distilled from B: triplet (0.2) + distill, tau_t = 0.5, tau_s = 12 (the
  paper's tau_t = 2 on our max-sim sums gave near one-hot targets and a weaker F than no
  distillation at all: BENCHMARKS.md, issue 13, session 4).
- ``base``, ``fast``: B and F with the triplet loss only (the paper's Table 2 baselines).

Every stage also trains the keyword heads with ASL: the image head on the image's labels, the
text head on the labels of its paired image. A stage directory holds ``config.json``,
``model.safetensors``, ``optimizer.safetensors``, ``state.json`` (epochs done, history),
``tokenizer/``, ``keywords.json``, ``train_log.jsonl`` and, when finished, ``metrics.json``.
A stage rerun on the same directory resumes after its last finished epoch.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import transformers
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from isr.device import pick_device
from isr.encoders.backbone import backbone_fields, read_backbone
from isr.encoders.bundle import write_bundle
from isr.encoders.checkpoint import (
    CONFIG_FILE,
    LOG_FILE,
    METRICS_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    load_encoder,
    read_metadata,
    read_tensors,
    save_encoder,
    write_tensors,
)
from isr.encoders.config import EncoderConfig, EncoderType, read_json, write_json
from isr.encoders.losses import AsymmetricLoss, DistillLoss, TripletLoss
from isr.encoders.model import DualEncoder, TowerOutput
from isr.encoders.scoring import recall_at_k
from isr.encoders.tokenizer import load_tokenizer, tokenize, train_tokenizer
from isr.encoders.vocabulary import KEYWORDS_FILE, KeywordVocab
from isr.errors import Conflict, CorruptIndex, InvalidInput

__all__ = ["STAGES", "PairedData", "TrainConfig", "run_recipe", "train_stage"]

STAGES: tuple[str, ...] = ("inflate", "shrink-base", "shrink-fast", "base", "fast")
STATE_FILE = "state.json"
OPTIM_FILE = "optimizer.safetensors"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of every stage (saved in each stage's ``state.json``).

    Model (used when no checkpoint dictates them): ``backbone`` is a local BERT checkpoint
    directory (e.g. :func:`isr.encoders.backbone.minilm_path`, hidden 384) whose embeddings,
    first ``layers`` layers and tokenizer initialise the model; without one a WordPiece
    tokenizer of at most ``tokenizer_vocab`` entries is trained on the captions and the model
    (``hidden``/``heads``/``intermediate``) starts at random. ``dim`` is the fragment size d.

    Optimisation: AdamW, linear warm-up over ``warmup`` of all steps then linear decay;
    ``backbone_lr`` for the shared transformer when it came from a checkpoint, ``lr`` for the
    rest. An epoch visits ``captions_per_epoch`` (1-5) captions of every training image, each
    batch holding distinct images. ``negatives`` selects the triplet form ("sum" or VSE++
    "hardest"); "sum" is the default as hardest negatives stall from a random start.

    ``first_token`` (see :class:`~isr.encoders.config.EncoderConfig`): "mean" feeds each
    side's first token the mean of its other inputs; with "learned" a randomly initialised F
    starts collapsed and did not learn (BENCHMARKS.md, issue 13). ``code_input`` likewise
    for the inflated model's code tokens ("mean": each code plus the side's token mean).
    ``fast_pool``: the fast model's vector, its first output token ("first") or the mean of
    its output tokens ("mean": what an F on a MiniLM text tower needs; see EncoderConfig).

    Shrinking: ``init_from_teacher`` copies every teacher tensor whose name and shape match
    (all but the codes) before distilling. ``device``: "auto" (CUDA when present, with
    autocast when ``amp``), "cpu" or "cuda". ``maxsim_bf16``: the training max-sim interactions
    (the largest tensor of a B or I step) in bfloat16; on a CPU with AMX this op is ~4x faster,
    whereas autocasting the whole (narrow) transformer to bfloat16 was slower here.
    ``teacher_cache_mb``: a shrink stage keeps its frozen (eval-mode, so deterministic)
    teacher's fragments of every training caption and image once computed, and scores later
    batches from them instead of running the teacher's towers every step, when they fit in
    this many MiB (0: never). Same scores up to float rounding.
    """

    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-4
    backbone_lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.05
    grad_clip: float = 2.0
    negatives: Literal["sum", "hardest"] = "sum"
    margin_fast: float = 0.2
    margin_base: float = 0.6
    tau_t_shrink_base: float = 12.0
    tau_s_shrink_base: float = 12.0
    tau_t_shrink_fast: float = 0.5
    tau_s_shrink_fast: float = 12.0
    distill_weight: float = 1.0
    keyword_weight: float = 1.0
    init_from_teacher: bool = True
    captions_per_epoch: int = 5
    backbone: str | None = None
    hidden: int = 256
    layers: int = 3
    heads: int = 4
    intermediate: int = 1024
    dim: int = 256
    codes: int = 32
    kmeans_k: int = 0
    max_text_len: int = 32
    max_frags: int = 32
    dropout: float = 0.1
    first_token: Literal["learned", "mean"] = "mean"
    code_input: Literal["learned", "mean"] = "mean"
    fast_pool: Literal["first", "mean"] = "first"
    tokenizer_vocab: int = 8000
    val_size: int = 1000
    eval_batch_size: int = 256
    device: str = "auto"
    amp: bool = True
    maxsim_bf16: bool = False
    teacher_cache_mb: int = 2048
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "layers", "dim", "codes"):
            if getattr(self, name) < (0 if name in ("epochs", "codes") else 1):
                raise InvalidInput(f"{name}: invalid value {getattr(self, name)}")
        if self.teacher_cache_mb < 0:
            raise InvalidInput(f"teacher_cache_mb must be >= 0, got {self.teacher_cache_mb}")
        if self.batch_size < 2:
            raise InvalidInput(
                f"batch_size must be >= 2 (in-batch negatives), got {self.batch_size}"
            )
        if not 1 <= self.captions_per_epoch <= 5:
            raise InvalidInput(f"captions_per_epoch must be in 1..5, got {self.captions_per_epoch}")
        if self.negatives not in ("sum", "hardest"):
            raise InvalidInput(f"negatives must be 'sum' or 'hardest', got {self.negatives!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidInput(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise InvalidInput(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if self.lr <= 0 or self.backbone_lr <= 0:
            raise InvalidInput(f"learning rates must be > 0, got {self.lr}, {self.backbone_lr}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInput(f"train config: unknown fields {unknown}")
        return cls(**d)


@dataclass(frozen=True)
class PairedData:
    """N images with ``caps_per_image`` captions each, validated once when built.

    images:     (N, m, D) float region features (a numpy memmap works; rows are read per batch).
    captions:   N * caps_per_image strings; those of image i are at i*c .. i*c + c-1.
    labels:     (N, L) multi-hot keyword targets of each image, or None (no keyword heads).
    image_mask: (N, m) bool, True where a region is real; None means all are.
    rows:       the image ids in use, in order (None: all N); set by :meth:`select`, which
                shares the arrays instead of copying them.
    """

    images: np.ndarray
    captions: Sequence[str]
    labels: np.ndarray | None = None
    image_mask: np.ndarray | None = None
    caps_per_image: int = 5
    rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or 0 in self.images.shape:
            raise InvalidInput(
                f"images: expected a non-empty (N, m, D) array, got {self.images.shape}"
            )
        n, m, _ = self.images.shape
        if self.caps_per_image < 1:
            raise InvalidInput(f"caps_per_image must be >= 1, got {self.caps_per_image}")
        if len(self.captions) != n * self.caps_per_image:
            raise InvalidInput(
                f"captions: {len(self.captions)} for {n} images; expected "
                f"{n * self.caps_per_image} ({self.caps_per_image} per image)"
            )
        for i, c in enumerate(self.captions):
            if not isinstance(c, str) or not c.strip():
                raise InvalidInput(f"captions[{i}] is empty or not a string: {c!r}")
        if self.labels is not None and (self.labels.ndim != 2 or self.labels.shape[0] != n):
            raise InvalidInput(f"labels: expected shape ({n}, L), got {self.labels.shape}")
        if self.image_mask is not None:
            if self.image_mask.shape != (n, m):
                raise InvalidInput(
                    f"image_mask: expected shape {(n, m)}, got {self.image_mask.shape}"
                )
            if not self.image_mask.any(1).all():
                i = int(np.argmin(self.image_mask.any(1)))
                raise InvalidInput(f"image_mask: image {i} has no regions")
        for s in range(0, n, 1024):  # chunked: images may be a large memmap
            block = np.asarray(self.images[s : s + 1024])
            if not np.isfinite(block).all():
                i = s + int(np.argwhere(~np.isfinite(block))[0, 0])
                raise InvalidInput(f"images: image {i} has NaN or inf features")

        if self.rows is not None:
            r = np.asarray(self.rows)
            if r.ndim != 1 or (r.size and (r.min() < 0 or r.max() >= n)):
                raise InvalidInput(f"rows: expected image ids in [0, {n}), got {r}")

    def __len__(self) -> int:
        return int(self.images.shape[0] if self.rows is None else len(self.rows))

    @property
    def image_ids(self) -> np.ndarray:
        """Ids of the images in use, in order. # (len,) int64"""
        if self.rows is None:
            return np.arange(self.images.shape[0])
        return np.asarray(self.rows, dtype=np.int64)

    def select(self, pos: np.ndarray) -> PairedData:
        """The images at positions ``pos`` of this set (sharing the arrays, no re-validation)."""
        out = copy.copy(self)
        object.__setattr__(out, "rows", self.image_ids[pos])
        return out

    def row_captions(self) -> list[str]:
        """Captions of the images in use, image by image (caption t belongs to row t // c)."""
        c = self.caps_per_image
        return [self.captions[i * c + j] for i in self.image_ids.tolist() for j in range(c)]


@dataclass(frozen=True)
class _StageSpec:
    type: EncoderType
    margin: str  # TrainConfig field of the triplet margin
    tau: tuple[str, str] | None  # TrainConfig fields of (tau_t, tau_s), or None: no teacher


_SPECS: dict[str, _StageSpec] = {
    "inflate": _StageSpec("inflated", "margin_base", None),
    "base": _StageSpec("base", "margin_base", None),
    "fast": _StageSpec("fast", "margin_fast", None),
    "shrink-base": _StageSpec("base", "margin_base", ("tau_t_shrink_base", "tau_s_shrink_base")),
    "shrink-fast": _StageSpec("fast", "margin_fast", ("tau_t_shrink_fast", "tau_s_shrink_fast")),
}


# -- the stage --------------------------------------------------------------------------------


def train_stage(
    stage: str,
    cfg: TrainConfig,
    train: PairedData,
    out_dir: Path,
    *,
    vocab: KeywordVocab | None = None,
    teacher_dir: Path | None = None,
    tokenizer_dir: Path | None = None,
    val: PairedData | None = None,
    command: str | None = None,
) -> Path:
    """Train one stage into ``out_dir`` (its checkpoint directory) and return ``out_dir``.

    ``vocab`` names the columns of ``train.labels`` (required when labels are given).
    ``teacher_dir``: a finished stage directory, required by (and only by) the shrink stages;
    the student uses the teacher's tokenizer.
    ``tokenizer_dir``: a saved tokenizer to use (stages meant for one bundle must share one).
    Without either, the backbone's tokenizer is used, or a new one is trained on the captions.
    ``val``: held-out pairs for the per-epoch recall; when None, up to ``cfg.val_size`` images
    (a tenth at most) are held out of ``train`` by a seeded draw.
    ``command``: recorded in ``metrics.json`` (defaults to this process's argv).
    A directory whose ``state.json`` shows finished epochs resumes from there; one that
    already has ``cfg.epochs`` epochs is returned untouched.
    """
    if stage not in _SPECS:
        raise InvalidInput(f"stage {stage!r} is not one of {STAGES}")
    spec = _SPECS[stage]
    if (spec.tau is not None) != (teacher_dir is not None):
        need = "needs a" if spec.tau is not None else "takes no"
        raise InvalidInput(f"stage {stage!r} {need} teacher_dir")
    if teacher_dir is not None and tokenizer_dir is not None:
        raise InvalidInput(
            "pass teacher_dir or tokenizer_dir, not both: a student uses its teacher's"
        )
    n_labels = 0 if train.labels is None else int(train.labels.shape[1])
    if n_labels and (vocab is None or len(vocab) != n_labels):
        have = "no vocab" if vocab is None else f"a vocab of {len(vocab)}"
        raise InvalidInput(f"labels have {n_labels} columns but {have} was given")
    if val is None:
        train, val = _hold_out(train, cfg)
    if val.images.shape[2] != train.images.shape[2]:
        raise InvalidInput(
            f"val images have dim {val.images.shape[2]}, train images {train.images.shape[2]}"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = _device(cfg)
    command = command if command is not None else " ".join(sys.argv)

    tok = _tokenizer(cfg, train, out_dir, teacher_dir or tokenizer_dir)
    mcfg = _model_config(cfg, spec.type, tok, train, n_labels)
    if teacher_dir is not None:
        tfile = Path(teacher_dir) / CONFIG_FILE
        _check_teacher(EncoderConfig.from_dict(read_json(tfile), str(tfile)), mcfg, tfile)
    state = _read_state(out_dir, stage, mcfg, cfg)
    if state["epochs_done"] >= cfg.epochs and (out_dir / METRICS_FILE).exists():
        return out_dir  # finished earlier

    teacher = None
    if teacher_dir is not None:
        teacher = load_encoder(Path(teacher_dir), device)
        teacher.requires_grad_(False)
    resuming = state["epochs_done"] > 0
    if resuming:
        _check_epochs(out_dir, state["epochs_done"])
        model = load_encoder(out_dir, "cpu").train()
    else:
        torch.manual_seed(cfg.seed)
        model = DualEncoder(mcfg)
        if cfg.backbone is not None:
            bb = read_backbone(Path(cfg.backbone), mcfg.layers)
            model.load_backbone(bb.state, str(bb.path))
        if teacher is not None and cfg.init_from_teacher:
            _copy_matching(teacher, model)
    model.to(device)
    opt = _optimizer(model, cfg)
    if resuming:
        _load_optimizer(opt, out_dir / OPTIM_FILE, model)
    else:
        save_encoder(model, out_dir, {"epoch": "0"})
        if vocab is not None:
            vocab.save(out_dir / KEYWORDS_FILE)
        _write_log(out_dir / LOG_FILE, [])

    ids, tmask = _pretokenize(tok, train.captions, mcfg.max_text_len)  # indexed by caption id
    val_ids, val_tmask = _pretokenize(tok, val.row_captions(), mcfg.max_text_len)
    cache = None
    if teacher is not None:
        cache = _TeacherCache.build(teacher, train, cfg, device)
    triplet = TripletLoss(getattr(cfg, spec.margin), cfg.negatives)
    distill = (
        None
        if spec.tau is None
        else DistillLoss(getattr(cfg, spec.tau[0]), getattr(cfg, spec.tau[1]))
    )
    asl = AsymmetricLoss()
    steps_per_epoch = _steps_per_epoch(len(train), cfg)
    total = max(1, steps_per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=_amp_dtype(cfg, device) == torch.float16)

    for epoch in range(state["epochs_done"], cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout: the same whatever resumed where
        rng = np.random.default_rng([cfg.seed, epoch])
        sums: dict[str, float] = {}
        bar = tqdm(
            _epoch_batches(train, cfg, rng),
            total=steps_per_epoch,
            desc=f"{stage} {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
        )
        for step, (img_idx, cap_idx) in enumerate(bar):
            g = epoch * steps_per_epoch + step
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * _schedule(g, total, cfg.warmup)
            batch = _batch(train, ids, tmask, img_idx, cap_idx, device)
            with _autocast(cfg, device):
                parts = _losses(model, teacher, batch, triplet, distill, asl, cfg, cache)
                loss = sum(parts.values(), torch.zeros((), device=device))
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{stage}: loss is {loss.item()} at epoch {epoch} step {step}"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}")
        n_steps = max(1, steps_per_epoch)
        metrics = _evaluate(model, val, val_ids, val_tmask, cfg.eval_batch_size, device)
        row = {
            "stage": stage,
            "epoch": epoch + 1,
            "steps": steps_per_epoch,
            **{k: v / n_steps for k, v in sums.items()},
            "val": metrics,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        # Weights first, then the state that commits them; each file is replaced atomically
        # and carries its epoch, so a crash between two writes is detected on resume.
        tag = {"epoch": str(epoch + 1)}
        save_encoder(model, out_dir, tag)
        write_tensors(out_dir / OPTIM_FILE, _optimizer_tensors(opt, model), tag)
        state["epochs_done"] = epoch + 1
        state["history"].append(row)
        write_json(out_dir / STATE_FILE, state)
        _write_log(out_dir / LOG_FILE, state["history"])
        if cfg.progress:  # the recall is what tells a run is learning; the log keeps the rest
            r = " / ".join(f"{metrics.get(f'{d}_r{k}', float('nan')):.1f}"
                           for d in ("t2i", "i2t") for k in (1, 5, 10))  # fmt: skip
            tqdm.write(f"{stage} epoch {epoch + 1}/{cfg.epochs}: loss {row.get('loss', float('nan')):.4f}, "
                       f"val R@1/5/10 (%) T->I / I->T {r}, {row['seconds']:.1f} s")  # fmt: skip

    final = state["history"][-1]["val"] if state["history"] else {}
    write_json(
        out_dir / METRICS_FILE,
        {
            "stage": stage,
            "model_type": mcfg.type,
            "epochs": state["epochs_done"],
            "val": final,
            "history": state["history"],
            "train_config": cfg.to_dict(),
            "teacher": None if teacher_dir is None else str(teacher_dir),
            "n_train_images": len(train),
            "n_val_images": len(val),
            "command": command,
            "versions": _versions(),
        },
    )
    return out_dir


def _evaluate(
    model: DualEncoder,
    data: PairedData,
    ids: torch.Tensor,
    tmask: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """R@1/5/10 both ways (see :func:`~isr.encoders.scoring.recall_at_k`) of ``model`` on
    ``data``, whose :meth:`PairedData.row_captions` are pre-tokenised as ``ids``/``tmask``."""
    model.eval()
    with torch.inference_mode():
        imgs, txts = [], []
        rows = data.image_ids
        for s in range(0, len(rows), batch_size):
            feats, fmask = _images(data, rows[s : s + batch_size], device)
            imgs.append(model.encode_image(feats, fmask))
        for s in range(0, ids.shape[0], batch_size):
            sl = slice(s, s + batch_size)
            i, m = _trim(ids[sl], tmask[sl])
            txts.append(model.encode_text(i.to(device), m.to(device)))
        sims = model.similarity(_cat(txts), _cat(imgs)).float().cpu().numpy()
    return recall_at_k(sims, data.caps_per_image)


# -- the recipe -------------------------------------------------------------------------------


def run_recipe(
    recipe: Literal["paper", "plain"],
    cfg: TrainConfig,
    train: PairedData,
    out_dir: Path,
    *,
    vocab: KeywordVocab | None = None,
    val: PairedData | None = None,
    command: str | None = None,
) -> Path:
    """Run a chain of stages under ``out_dir`` and write the bundle to ``out_dir/bundle``.

    "paper": inflate -> shrink-base (teacher I) -> shrink-fast (teacher B); the bundle serves
    the shrunk B and F. "plain": base and fast without distillation. Finished stages are
    skipped and an interrupted one resumes, so rerunning the same command continues.
    Returns the bundle directory.
    """
    if recipe not in ("paper", "plain"):
        raise InvalidInput(f"recipe {recipe!r} is not 'paper' or 'plain'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if val is None:
        train, val = _hold_out(train, cfg)  # once, so every stage sees the same split
    # One tokenizer for every stage: the bundle's B and F must read the same ids.
    tok_dir = out_dir / TOKENIZER_DIR
    _tokenizer(cfg, train, out_dir, None)
    kw: dict[str, Any] = {"vocab": vocab, "val": val, "command": command}
    if recipe == "paper":
        inflated = train_stage(
            "inflate", cfg, train, out_dir / "inflate", tokenizer_dir=tok_dir, **kw
        )
        base = train_stage(
            "shrink-base", cfg, train, out_dir / "shrink-base", teacher_dir=inflated, **kw
        )
        fast = train_stage(
            "shrink-fast", cfg, train, out_dir / "shrink-fast", teacher_dir=base, **kw
        )
    else:
        base = train_stage("base", cfg, train, out_dir / "base", tokenizer_dir=tok_dir, **kw)
        fast = train_stage("fast", cfg, train, out_dir / "fast", tokenizer_dir=tok_dir, **kw)
    return write_bundle(base, fast, out_dir / "bundle")


# -- pieces -----------------------------------------------------------------------------------


def _device(cfg: TrainConfig) -> torch.device:
    """The project's one device rule (:func:`isr.device.pick_device`) on ``cfg.device``."""
    return pick_device(cfg.device, "TrainConfig.device")


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _autocast(cfg: TrainConfig, device: torch.device) -> AbstractContextManager[Any]:
    dtype = _amp_dtype(cfg, device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def _hold_out(data: PairedData, cfg: TrainConfig) -> tuple[PairedData, PairedData]:
    n = len(data)
    n_val = min(cfg.val_size, n // 10)
    if n_val < 1:
        raise InvalidInput(f"{n} images are too few to hold out a validation split; pass val")
    perm = np.random.default_rng([cfg.seed, 7]).permutation(n)
    return data.select(np.sort(perm[n_val:])), data.select(np.sort(perm[:n_val]))


def _tokenizer(
    cfg: TrainConfig, train: PairedData, out_dir: Path, source: Path | None
) -> PreTrainedTokenizerBase:
    """The stage's tokenizer: a resumed run's, the given one (a teacher's stage directory or a
    tokenizer directory), the backbone's, or a new one trained on the captions.

    Training is not bit-reproducible (tokenizers breaks merge ties in hash-map order,
    huggingface/tokenizers#1794), so a tokenizer is trained once and then always reused."""
    mine = out_dir / TOKENIZER_DIR
    if mine.is_dir():
        return load_tokenizer(mine)
    if source is not None:
        src = Path(source)
        tok = load_tokenizer(src / TOKENIZER_DIR if (src / TOKENIZER_DIR).is_dir() else src)
    elif cfg.backbone is not None:
        tok = load_tokenizer(Path(cfg.backbone))
    else:
        tok = train_tokenizer(train.row_captions(), cfg.tokenizer_vocab)
    tok.save_pretrained(str(mine))
    return tok


def _model_config(
    cfg: TrainConfig,
    type_: EncoderType,
    tok: PreTrainedTokenizerBase,
    train: PairedData,
    n_labels: int,
) -> EncoderConfig:
    arch: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden": cfg.hidden,
        "heads": cfg.heads,
        "intermediate": cfg.intermediate,
        "max_positions": max(64, cfg.max_text_len),
        "pad_token_id": int(tok.pad_token_id),
    }
    if cfg.backbone is not None:
        arch.update(backbone_fields(Path(cfg.backbone), cfg.layers))
        if len(tok) > int(arch["vocab_size"]):
            raise InvalidInput(
                f"tokenizer has {len(tok)} tokens, the backbone embeds {arch['vocab_size']}"
            )
    return EncoderConfig(
        type=type_,
        image_in_dim=int(train.images.shape[2]),
        layers=cfg.layers,
        dim=cfg.dim,
        codes=cfg.codes if type_ == "inflated" else 0,
        max_text_len=cfg.max_text_len,
        max_frags=cfg.max_frags,
        kmeans_k=cfg.kmeans_k,
        n_labels=n_labels,
        dropout=cfg.dropout,
        first_token=cfg.first_token,
        fast_pool=cfg.fast_pool if type_ == "fast" else "first",
        code_input=cfg.code_input if type_ == "inflated" else "learned",
        **arch,
    )


def _check_teacher(t: EncoderConfig, s: EncoderConfig, path: Path) -> None:
    for name in ("image_in_dim", "vocab_size", "n_labels"):
        if getattr(t, name) != getattr(s, name):
            raise Conflict(
                f"teacher {path}: {name} is {getattr(t, name)}, the student's is {getattr(s, name)}"
            )


# Settings a resumed run may change: more epochs (the LR schedule stretches to the new total),
# and where or how verbosely it runs. ``code_input`` is checked through the saved model config
# instead (it is "learned" in every model but an inflated one, and absent from older states);
# so is ``fast_pool`` ("first" in every model but a fast one).
_MAY_CHANGE = (
    "epochs", "progress", "device", "amp", "maxsim_bf16", "eval_batch_size", "teacher_cache_mb",
    "code_input", "fast_pool",
)  # fmt: skip


def _read_state(out_dir: Path, stage: str, mcfg: EncoderConfig, cfg: TrainConfig) -> dict[str, Any]:
    """A fresh state, or the one of an interrupted run of the same stage and config."""
    path = out_dir / STATE_FILE
    if not path.exists():
        return {"stage": stage, "epochs_done": 0, "history": [], "train_config": cfg.to_dict()}
    state = read_json(path)
    if state.get("stage") != stage:
        raise Conflict(f"{out_dir} holds stage {state.get('stage')!r}, not {stage!r}")
    saved = EncoderConfig.from_dict(read_json(out_dir / CONFIG_FILE), str(out_dir / CONFIG_FILE))
    if saved != mcfg:
        raise Conflict(
            f"{out_dir}: the saved model config differs from this run's; use a new directory"
        )
    old = state.get("train_config", {})
    changed = sorted(
        k for k, v in cfg.to_dict().items() if k not in _MAY_CHANGE and old.get(k) != v
    )
    if changed:
        raise Conflict(
            f"{out_dir}: resuming with different settings {changed}; use a new directory"
        )
    state["train_config"] = cfg.to_dict()
    return dict(state)


def _check_epochs(out_dir: Path, done: int) -> None:
    for name in (WEIGHTS_FILE, OPTIM_FILE):
        got = read_metadata(out_dir / name).get("epoch")
        if got != str(done):
            raise CorruptIndex(
                f"{out_dir / name} holds epoch {got}, but {STATE_FILE} records {done} finished "
                "epochs (interrupted while saving); train this stage again in a new directory"
            )


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def _copy_matching(src: DualEncoder, dst: DualEncoder) -> None:
    own = dst.state_dict()
    keep = {k: v for k, v in src.state_dict().items() if k in own and v.shape == own[k].shape}
    dst.load_state_dict(keep, strict=False)


def _optimizer(model: DualEncoder, cfg: TrainConfig) -> torch.optim.AdamW:
    bert = [p for n, p in model.named_parameters() if n.startswith("bert.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("bert.")]
    bert_lr = cfg.backbone_lr if cfg.backbone is not None else cfg.lr
    groups = [
        {"params": bert, "lr": bert_lr, "base_lr": bert_lr},
        {"params": rest, "lr": cfg.lr, "base_lr": cfg.lr},
    ]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _optimizer_tensors(opt: torch.optim.Optimizer, model: DualEncoder) -> dict[str, torch.Tensor]:
    """AdamW moments keyed by parameter name, so resuming needs no pickle."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                out[f"{names[id(p)]}::{k}"] = torch.as_tensor(v)
    return out


def _load_optimizer(opt: torch.optim.Optimizer, path: Path, model: DualEncoder) -> None:
    tensors = read_tensors(path)
    params = dict(model.named_parameters())
    for key, v in tensors.items():
        name, _, k = key.partition("::")
        if name not in params:
            raise Conflict(f"{path}: optimizer state for unknown parameter {name}")
        p = params[name]
        opt.state[p][k] = v.to(p.device) if k != "step" else v


def _steps_per_epoch(n: int, cfg: TrainConfig) -> int:
    per_round = n // cfg.batch_size + (1 if n % cfg.batch_size >= 2 else 0)
    return per_round * cfg.captions_per_epoch


def _schedule(step: int, total: int, warmup: float) -> float:
    w = max(1, math.ceil(warmup * total))
    if step < w:
        return (step + 1) / w
    return max(0.0, (total - step) / max(1, total - w))


def _epoch_batches(
    data: PairedData, cfg: TrainConfig, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image ids, caption ids) per batch: each round visits every image once with a different
    caption slot, so a batch never holds two captions of one image (they would be negatives)."""
    ids, c = data.image_ids, data.caps_per_image
    n = len(ids)
    offset = rng.integers(0, c, size=n)
    for r in range(cfg.captions_per_epoch):
        perm = rng.permutation(n)
        for s in range(0, n, cfg.batch_size):
            pos = perm[s : s + cfg.batch_size]
            if len(pos) < 2:  # a lone pair has no negative
                continue
            img = ids[pos]
            yield img, img * c + (offset[pos] + r) % c


def _pretokenize(
    tok: PreTrainedTokenizerBase, texts: Sequence[str], max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """All captions as (T, max_len) ids and mask; batches are trimmed to their longest."""
    ids = torch.zeros(len(texts), max_len, dtype=torch.long)
    mask = torch.zeros(len(texts), max_len, dtype=torch.bool)
    for s in range(0, len(texts), 4096):
        i, m = tokenize(tok, texts[s : s + 4096], max_len)
        ids[s : s + len(i), : i.shape[1]] = i
        mask[s : s + len(i), : i.shape[1]] = m
    return ids, mask


def _trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = int(mask.sum(1).max())
    return ids[:, :n], mask[:, :n]


def _images(
    data: PairedData, idx: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    feats = torch.from_numpy(np.asarray(data.images[idx], dtype=np.float32))  # (B, m, D)
    if data.image_mask is None:
        mask = torch.ones(feats.shape[:2], dtype=torch.bool)
    else:
        mask = torch.from_numpy(np.asarray(data.image_mask[idx], dtype=bool))
    return feats.to(device), mask.to(device)


@dataclass(frozen=True)
class _Batch:
    feats: torch.Tensor  # (B, m, D)
    fmask: torch.Tensor  # (B, m)
    ids: torch.Tensor  # (B, n)
    tmask: torch.Tensor  # (B, n)
    labels: torch.Tensor | None  # (B, L)
    img_idx: np.ndarray | None = None  # (B,) image ids (what a teacher cache is keyed by)
    cap_idx: np.ndarray | None = None  # (B,) caption ids


def _batch(
    data: PairedData,
    ids: torch.Tensor,
    tmask: torch.Tensor,
    img_idx: np.ndarray,
    cap_idx: np.ndarray,
    device: torch.device,
) -> _Batch:
    feats, fmask = _images(data, img_idx, device)
    ci = torch.from_numpy(cap_idx)
    i, m = _trim(ids[ci], tmask[ci])
    labels = (
        None
        if data.labels is None
        else torch.from_numpy(np.asarray(data.labels[img_idx], dtype=np.float32))
    )
    return _Batch(
        feats,
        fmask,
        i.to(device),
        m.to(device),
        None if labels is None else labels.to(device),
        img_idx,
        cap_idx,
    )


def _losses(
    model: DualEncoder,
    teacher: DualEncoder | None,
    b: _Batch,
    triplet: TripletLoss,
    distill: DistillLoss | None,
    asl: AsymmetricLoss,
    cfg: TrainConfig,
    cache: _TeacherCache | None = None,
) -> dict[str, torch.Tensor]:
    t = model.encode_text(b.ids, b.tmask)
    v = model.encode_image(b.feats, b.fmask)
    low = torch.bfloat16 if cfg.maxsim_bf16 else None
    s = model.similarity(t, v, low)  # (B, B)
    parts = {"triplet": triplet(s)}
    if teacher is not None and distill is not None:
        with torch.no_grad():
            if cache is not None and b.img_idx is not None and b.cap_idx is not None:
                tt = cache.texts(b.cap_idx, b.ids, b.tmask)
                tv = cache.images(b.img_idx, b.feats, b.fmask)
            else:
                tt, tv = teacher.encode_text(b.ids, b.tmask), teacher.encode_image(b.feats, b.fmask)
            s_t = teacher.similarity(tt, tv, low)
        parts["distill"] = cfg.distill_weight * distill(s, s_t)
    if b.labels is not None and t.logits is not None and v.logits is not None:
        parts["keyword"] = cfg.keyword_weight * (asl(v.logits, b.labels) + asl(t.logits, b.labels))
    return parts


class _TeacherCache:
    """A frozen teacher's fragments of the training captions and images, filled as batches
    first meet them: a shrink stage runs the teacher's towers once per caption and image in
    its first epoch (fewer passes than per batch: an image recurs in every caption round),
    and not at all after. The teacher is in eval mode (no dropout), so its output per item is
    fixed; padding beyond an item's fragments is masked, so max-sim scores equal those of
    the teacher run on the batch (to float rounding).

    Rows: caption j of the image at position p (of ``data.image_ids``) is text row p * c + j;
    images by position. Built by :meth:`build`, which says None when the fragments would not
    fit in ``cfg.teacher_cache_mb`` MiB.
    """

    def __init__(
        self, teacher: DualEncoder, data: PairedData, n_t: int, m_i: int, device: torch.device
    ) -> None:
        rows, c = data.image_ids, data.caps_per_image
        d = teacher.cfg.dim
        self.teacher = teacher
        self.c = c
        self.pos = np.full(int(rows.max()) + 1, -1, dtype=np.int64)
        self.pos[rows] = np.arange(len(rows))
        self.t_frags = torch.zeros(len(rows) * c, n_t, d, device=device)  # (C, n', d)
        self.t_mask = torch.zeros(len(rows) * c, n_t, dtype=torch.bool, device=device)
        self.t_done = np.zeros(len(rows) * c, dtype=bool)
        self.i_frags = torch.zeros(len(rows), m_i, d, device=device)  # (N, m', d)
        self.i_mask = torch.zeros(len(rows), m_i, dtype=torch.bool, device=device)
        self.i_done = np.zeros(len(rows), dtype=bool)

    @classmethod
    def build(
        cls, teacher: DualEncoder, data: PairedData, cfg: TrainConfig, device: torch.device
    ) -> _TeacherCache | None:
        tc = teacher.cfg
        if tc.type == "fast":
            n_t = m_i = 1
        else:  # at most: the kept tokens, then the codes
            n_t = min(tc.max_text_len, tc.max_frags) + tc.codes
            m_i = min(data.images.shape[1] + 1, tc.max_frags) + tc.codes
        c = data.caps_per_image
        mb = (4 * tc.dim + 1) * len(data) * (c * n_t + m_i) / 2**20
        if cfg.teacher_cache_mb == 0 or mb > cfg.teacher_cache_mb:
            return None
        return cls(teacher, data, n_t, m_i, device)

    def texts(self, cap_idx: np.ndarray, ids: torch.Tensor, tmask: torch.Tensor) -> TowerOutput:
        """The teacher's output for the batch's captions (ids/tmask: the batch's (B, n))."""
        row = self.pos[cap_idx // self.c] * self.c + cap_idx % self.c
        new = ~self.t_done[row]
        if new.any():
            sel = torch.from_numpy(np.flatnonzero(new)).to(ids.device)
            i, m = _trim(ids[sel], tmask[sel])
            self._store(self.teacher.encode_text(i, m), row[new], self.t_frags, self.t_mask)
            self.t_done[row[new]] = True
        return _rows(self.t_frags, self.t_mask, row)

    def images(self, img_idx: np.ndarray, feats: torch.Tensor, fmask: torch.Tensor) -> TowerOutput:
        """The teacher's output for the batch's images (feats (B, m, D), fmask (B, m))."""
        row = self.pos[img_idx]
        new = ~self.i_done[row]
        if new.any():
            sel = torch.from_numpy(np.flatnonzero(new)).to(feats.device)
            out = self.teacher.encode_image(feats[sel], fmask[sel])
            self._store(out, row[new], self.i_frags, self.i_mask)
            self.i_done[row[new]] = True
        return _rows(self.i_frags, self.i_mask, row)

    @staticmethod
    def _store(out: TowerOutput, row: np.ndarray, frags: torch.Tensor, mask: torch.Tensor) -> None:
        r = torch.from_numpy(row).to(frags.device)
        n = out.frags.shape[1]
        frags[r, :n] = out.frags.float()
        mask[r, :n] = out.mask


def _rows(frags: torch.Tensor, mask: torch.Tensor, row: np.ndarray) -> TowerOutput:
    """Rows of a cache, cut after the last fragment any of them has."""
    r = torch.from_numpy(row).to(frags.device)
    f, m = frags[r], mask[r]
    keep = int(m.any(0).nonzero().max()) + 1
    return TowerOutput(fast=f[:, 0], frags=f[:, :keep], mask=m[:, :keep], logits=None)


def _cat(outs: list[TowerOutput]) -> TowerOutput:
    """Concatenate tower outputs, padding fragments to the longest."""
    n = max(o.frags.shape[1] for o in outs)

    def pad(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, 0, 0, n - x.shape[1]))

    logits = [o.logits for o in outs]
    return TowerOutput(
        fast=torch.cat([o.fast for o in outs]),
        frags=torch.cat([pad(o.frags) for o in outs]),
        mask=torch.cat([torch.nn.functional.pad(o.mask, (0, n - o.mask.shape[1])) for o in outs]),
        logits=None
        if any(x is None for x in logits)
        else torch.cat([x for x in logits if x is not None]),
    )


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
