"""The served encoder bundle: one directory that turns texts and images into :class:`Encoded`.

Entry points: :meth:`Bundle.load` and :func:`write_bundle` (from finished training stages).
The engine depends on the encoders only through ``encode_texts`` / ``encode_images``.

Directory layout::

    config.json                 BundleConfig: the base (B) and fast (F) EncoderConfigs
    base.safetensors            B: fragments (the first ``max_frags`` outputs of each side)
    fast.safetensors            F: the fast vector (first output token)
    keyword_heads.safetensors   the label-embedding layers on B's text and image towers
    keywords.json               the keyword vocabulary (KeywordVocab), when there are labels
    tokenizer/                  the wordpiece tokenizer (Hugging Face files)
    metrics.json, train_log.jsonl   where the weights came from (written by write_bundle)
    image_backbone.json         the eyes the image tower was trained on (isr.encoders.eyes);
                                absent in bundles written before they recorded it
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from isr.encoders.checkpoint import (
    CONFIG_FILE,
    LOG_FILE,
    METRICS_FILE,
    TOKENIZER_DIR,
    check_state,
    load_encoder,
    read_tensors,
    write_tensors,
)
from isr.encoders.config import BundleConfig, read_json, write_json
from isr.encoders.eyes import Eyes, read_eyes, write_eyes
from isr.encoders.model import DualEncoder, TowerOutput
from isr.encoders.record import Encoded, Keywords
from isr.encoders.tokenizer import load_tokenizer, tokenize
from isr.encoders.vocabulary import KEYWORDS_FILE, KeywordVocab
from isr.errors import Conflict, CorruptIndex, InvalidInput, IsrError, NotFound

__all__ = ["BASE_FILE", "FAST_FILE", "HEADS_FILE", "Bundle", "write_bundle"]

BASE_FILE = "base.safetensors"
FAST_FILE = "fast.safetensors"
HEADS_FILE = "keyword_heads.safetensors"
# model name prefix -> file name prefix (kw_labels: the label vectors of the "maxsim" heads)
_HEADS = {"kw_text.": "text.", "kw_image.": "image.", "kw_labels": "labels"}


class Bundle:
    """B (fragments, keywords) + F (fast vector) + tokenizer + keyword vocabulary."""

    def __init__(
        self,
        cfg: BundleConfig,
        base: DualEncoder,
        fast: DualEncoder,
        tokenizer: PreTrainedTokenizerBase,
        vocab: KeywordVocab | None,
        eyes: Eyes | None = None,
    ) -> None:
        if base.cfg != cfg.base or fast.cfg != cfg.fast:
            raise InvalidInput("bundle: the models' configs differ from the bundle config")
        if cfg.fast.n_labels:
            raise InvalidInput(
                "bundle: keyword heads belong to the base model; fast has n_labels > 0"
            )
        n_labels = cfg.base.n_labels
        if n_labels and (vocab is None or len(vocab) != n_labels):
            have = "none" if vocab is None else str(len(vocab))
            raise InvalidInput(
                f"bundle: base model has {n_labels} keyword labels, vocabulary has {have}"
            )
        if len(tokenizer) > cfg.base.vocab_size:
            raise InvalidInput(
                f"bundle: tokenizer has {len(tokenizer)} tokens, "
                f"the models embed {cfg.base.vocab_size}"
            )
        self.cfg = cfg
        self.base = base.eval()
        self.fast = fast.eval()
        self.tokenizer = tokenizer
        self.keyword_vocab = vocab if n_labels else None
        self.eyes = eyes  # None: unknown (a bundle from before the record existed)

    # -- files --------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> Bundle:
        """Load a bundle directory; a missing directory raises NotFound, a missing, damaged or
        inconsistent file in it CorruptIndex naming the file."""
        path = Path(path)
        if not path.is_dir():
            raise NotFound(f"bundle directory {path} does not exist")
        cfg = BundleConfig.from_dict(read_json(path / CONFIG_FILE), str(path / CONFIG_FILE))
        base = DualEncoder(cfg.base)
        state = read_tensors(path / BASE_FILE)
        if cfg.base.n_labels:
            heads = read_tensors(path / HEADS_FILE)
            for mine, theirs in _HEADS.items():
                for k in [k for k in heads if k.startswith(theirs)]:
                    state[mine + k.removeprefix(theirs)] = heads.pop(k)
            if heads:
                raise CorruptIndex(f"{path / HEADS_FILE}: unexpected tensors {sorted(heads)[:3]}")
        check_state(base, state, path / BASE_FILE)
        base.load_state_dict(state)
        fast = DualEncoder(cfg.fast)
        state = read_tensors(path / FAST_FILE)
        check_state(fast, state, path / FAST_FILE)
        fast.load_state_dict(state)
        tok = load_tokenizer(path / TOKENIZER_DIR)
        vocab = _load_vocab(path / KEYWORDS_FILE) if cfg.base.n_labels else None
        try:
            bundle = cls(cfg, base.to(device), fast.to(device), tok, vocab, read_eyes(path))
        except InvalidInput as e:
            raise CorruptIndex(f"{path}: {e}") from e
        return bundle

    def save(self, path: Path) -> Path:
        """Write the bundle's files into ``path`` (created if needed); returns ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = self.base.state_dict()
        heads = {
            theirs + k.removeprefix(mine): state.pop(k)
            for mine, theirs in _HEADS.items()
            for k in [k for k in list(state) if k.startswith(mine)]
        }
        write_tensors(path / BASE_FILE, state)
        if heads:
            write_tensors(path / HEADS_FILE, heads)
        write_tensors(path / FAST_FILE, self.fast.state_dict())
        self.tokenizer.save_pretrained(str(path / TOKENIZER_DIR))
        if self.keyword_vocab is not None:
            self.keyword_vocab.save(path / KEYWORDS_FILE)
        if self.eyes is not None:
            write_eyes(path, self.eyes)
        write_json(path / CONFIG_FILE, self.cfg.to_dict())
        return path

    # -- facts --------------------------------------------------------------------------------

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the config, every weight tensor, the vocabulary and the tokenizer's
        vocabulary (and the image backbone record, when there is one): equal for a bundle and
        its saved-and-reloaded copy."""
        h = hashlib.sha256()
        h.update(json.dumps(self.cfg.to_dict(), sort_keys=True).encode())
        for prefix, model in (("base", self.base), ("fast", self.fast)):
            for name, t in sorted(model.state_dict().items()):
                t = t.detach().cpu().contiguous()
                h.update(f"{prefix}.{name}:{t.dtype}:{tuple(t.shape)}".encode())
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(json.dumps(self.vocab).encode())
        h.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
        if self.eyes is not None:  # other eyes, other features: another bundle
            h.update(json.dumps(self.eyes.to_dict(), sort_keys=True).encode())
        return h.hexdigest()

    @property
    def d_fast(self) -> int:
        return self.cfg.fast.dim

    @property
    def d_frag(self) -> int:
        return self.cfg.base.dim

    @property
    def max_frags(self) -> int:
        """Fragments per item at most: the first ``max_frags`` outputs of B's either side."""
        return self.cfg.base.max_frags

    @property
    def image_in_dim(self) -> int:
        return self.cfg.base.image_in_dim

    @property
    def vocab(self) -> list[str]:
        return [] if self.keyword_vocab is None else list(self.keyword_vocab.labels)

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    # -- encoding -----------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> Encoded:
        """Encode texts; each is truncated to ``max_text_len`` (32) wordpieces."""
        if isinstance(texts, str):
            raise InvalidInput("texts: expected a list of strings, got one string")
        _check_batch_size(batch_size)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInput(f"texts[{i}]: expected a string, got {type(t).__name__}")
            if not t.strip():
                raise InvalidInput(f"texts[{i}] is empty; every text needs at least one word")
        if not texts:
            return self._empty()
        parts = []
        with torch.inference_mode():
            for s in range(0, len(texts), batch_size):
                ids, mask = tokenize(
                    self.tokenizer, texts[s : s + batch_size], self.cfg.base.max_text_len
                )
                ids, mask = ids.to(self.device), mask.to(self.device)
                b = self.base.encode_text(ids, mask)
                f = self.fast.encode_text(ids, mask)
                parts.append(self._record(b, f, texts[s : s + batch_size]))
        return Encoded.concat(parts)

    def encode_images(
        self, feats: np.ndarray, mask: np.ndarray | None = None, batch_size: int = 256
    ) -> Encoded:
        """Encode images given as region / patch features.

        feats: (B, m, D) with D == ``image_in_dim`` and any m; mask: (B, m) bool, True where a
        region is real (None: all are). Padded regions are ignored, even when NaN.
        """
        _check_batch_size(batch_size)
        feats = np.asarray(feats)
        if feats.ndim != 3:
            raise InvalidInput(f"feats: expected shape (B, m, D), got {feats.shape}")
        b, m, dim = feats.shape
        if dim != self.image_in_dim:
            raise InvalidInput(f"feats: feature dim {dim}, this bundle expects {self.image_in_dim}")
        if not np.issubdtype(feats.dtype, np.number):
            raise InvalidInput(f"feats: expected a numeric array, got dtype {feats.dtype}")
        if mask is None:
            mask = np.ones((b, m), dtype=bool)
        mask = np.asarray(mask)
        if mask.shape != (b, m):
            raise InvalidInput(f"mask: expected shape {(b, m)}, got {mask.shape}")
        if mask.dtype != bool:
            raise InvalidInput(f"mask: expected a bool array, got dtype {mask.dtype}")
        if b == 0:
            return self._empty()
        if m == 0 or not mask.any(1).all():
            i = 0 if m == 0 else int(np.argmin(mask.any(1)))
            raise InvalidInput(f"feats: image {i} has no regions")
        bad = ~np.isfinite(feats).all(2) & mask  # (B, m)
        if bad.any():
            i, j = (int(x) for x in np.argwhere(bad)[0])
            raise InvalidInput(f"feats: image {i} has NaN or inf features (region {j})")
        feats = np.where(mask[..., None], feats, 0.0).astype(np.float32)
        parts = []
        with torch.inference_mode():
            for s in range(0, b, batch_size):
                x = torch.from_numpy(feats[s : s + batch_size]).to(self.device)
                xm = torch.from_numpy(mask[s : s + batch_size]).to(self.device)
                parts.append(
                    self._record(self.base.encode_image(x, xm), self.fast.encode_image(x, xm))
                )
        return Encoded.concat(parts)

    def _record(
        self, b: TowerOutput, f: TowerOutput, texts: Sequence[str] | None = None
    ) -> Encoded:
        return Encoded(
            fast=f.fast.float().cpu().numpy(),
            fragments=b.frags.float().cpu().numpy(),
            mask=b.mask.cpu().numpy(),
            keywords=self._keywords(b.logits, b.frags.shape[0], texts),
        )

    def _keywords(
        self, logits: torch.Tensor | None, n: int, texts: Sequence[str] | None
    ) -> tuple[Keywords, ...]:
        """Each item's top ``top_keywords`` predicted labels; a text's also carry the labels
        its own words name (the ``ext`` / ``merge`` text-keyword modes choose at query time)."""
        if logits is None or self.keyword_vocab is None:
            return tuple(Keywords.none() for _ in range(n))
        vocab = self.keyword_vocab
        labels = vocab.labels
        r = min(self.cfg.top_keywords, len(labels))
        p, idx = torch.sigmoid(logits.float()).topk(r, dim=1)  # (B, r), best first
        p_np, idx_np = p.cpu().numpy(), idx.cpu().numpy()
        ext = [()] * n if texts is None else [tuple(vocab.labels_of_text(t)) for t in texts]
        return tuple(
            Keywords(tuple(labels[j] for j in row), tuple(float(x) for x in probs), e)
            for row, probs, e in zip(idx_np, p_np, ext, strict=True)
        )

    def _empty(self) -> Encoded:
        return Encoded(
            fast=np.zeros((0, self.d_fast), np.float32),
            fragments=np.zeros((0, 1, self.d_frag), np.float32),
            mask=np.zeros((0, 1), bool),
            keywords=(),
        )


def write_bundle(base_dir: Path, fast_dir: Path, out: Path, top_keywords: int = 15) -> Path:
    """Build a bundle from a finished B stage (base or shrink-base) and F stage (fast or
    shrink-fast) and write it to ``out``, with the training logs and metrics of every stage
    in the chain (teachers included). Returns ``out``."""
    base_dir, fast_dir = Path(base_dir), Path(fast_dir)
    base = load_encoder(base_dir)
    fast_trained = load_encoder(fast_dir)
    if base.cfg.type != "base":
        raise InvalidInput(f"{base_dir} holds a {base.cfg.type!r} model, a bundle needs 'base'")
    if fast_trained.cfg.type != "fast":
        raise InvalidInput(
            f"{fast_dir} holds a {fast_trained.cfg.type!r} model, a bundle needs 'fast'"
        )
    tok = load_tokenizer(base_dir / TOKENIZER_DIR)
    if load_tokenizer(fast_dir / TOKENIZER_DIR).get_vocab() != tok.get_vocab():
        raise Conflict(f"{base_dir} and {fast_dir} were trained with different tokenizers")
    # The served keyword heads are B's; F's copy is dropped.
    fast = DualEncoder(fast_trained.cfg.replace(n_labels=0))
    state = {k: v for k, v in fast_trained.state_dict().items() if not k.startswith(tuple(_HEADS))}
    fast.load_state_dict(state)
    vocab = _load_vocab(base_dir / KEYWORDS_FILE) if base.cfg.n_labels else None
    cfg = BundleConfig(base=base.cfg, fast=fast.cfg, top_keywords=top_keywords)
    out = Bundle(cfg, base, fast, tok, vocab).save(out)
    _copy_logs(_stage_chain([base_dir, fast_dir]), out)
    return out


def _load_vocab(path: Path) -> KeywordVocab:
    try:
        return KeywordVocab.load(path)
    except IsrError as e:  # NotFound or InvalidInput: for a bundle, a damaged directory
        raise CorruptIndex(str(e)) from e


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")


def _stage_chain(dirs: list[Path]) -> list[Path]:
    """The stage directories preceded by their recorded teachers, oldest first."""
    order: list[Path] = []
    visiting: set[Path] = set()

    def visit(d: Path) -> None:
        if d in order or d in visiting:
            return
        visiting.add(d)
        if (d / METRICS_FILE).exists():
            teacher = read_json(d / METRICS_FILE).get("teacher")
            if teacher:
                visit(Path(teacher))
        order.append(d)

    for d in dirs:
        visit(d)
    return order


def _copy_logs(stage_dirs: list[Path], out: Path) -> None:
    lines: list[str] = []
    stages: dict[str, Any] = {}
    for d in stage_dirs:
        if (d / LOG_FILE).exists():
            lines += [
                x for x in (d / LOG_FILE).read_text(encoding="utf-8").splitlines() if x.strip()
            ]
        if (d / METRICS_FILE).exists():
            m = read_json(d / METRICS_FILE)
            stages[str(m.get("stage", d.name))] = m
    (out / LOG_FILE).write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    write_json(out / METRICS_FILE, {"stages": stages, "stage_dirs": [str(d) for d in stage_dirs]})
