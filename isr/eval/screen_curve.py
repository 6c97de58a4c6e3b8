"""The keyword screen measured on its own: head mAP, and ground truth kept vs gallery admitted.

Entry point: :func:`screen_curve` (``python -m isr.eval.screen_curve``). It encodes a gallery
of images and its captions with a bundle's B once, then evaluates the screen of Cao et al. for
every stored-label count R_I (per-rank: one encoding serves every R_I), every text-keyword mode
(``pred``: the text head; ``ext``: the query's own nouns mapped into the vocabulary; ``merge``:
both) and every query rule (the paper's top R_T, or the cost rule of
:func:`isr.plugin.keyword_rule.select_labels`). The arithmetic is the engine's (a document is
admitted when it stores one of the query's labels, ``mode="any"``), on matrices instead of
bitmaps, so a sweep of hundreds of settings takes seconds. Lift = kept / admitted: a filter
that admits a random share s keeps s of the ground truth (lift 1.0).

Query rules swept: the paper's top R_T (alpha 0), the cost rule (alpha > 0) and, for each, the
``miss`` stop (labels taken until prod(1 - p) <= miss, at most R_T) and the ``gain`` stop (a
further label only while its added kept chance per admitted share is >= gain). The two heads'
probabilities are cached beside the result (``probs_file``), so a new sweep needs no encoding.

Also reported: the collapse diagnostics (how many distinct top-3 label sets the text head gives
over all queries, and the share of queries given the most common one).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isr.encoders.bundle import Bundle
from isr.encoders.checkpoint import TOKENIZER_DIR, load_encoder
from isr.encoders.tokenizer import load_tokenizer, tokenize
from isr.encoders.vocabulary import KEYWORDS_FILE, KeywordVocab
from isr.eval.keywords import mean_average_precision
from isr.plugin.keyword_rule import select_labels

__all__ = ["ScreenPoint", "gallery_probs", "screen_curve", "screen_point"]


@dataclass(frozen=True)
class ScreenPoint:
    r_i: int
    mode: str
    rule: str  # "top" or "cost(alpha)"
    r_t: int
    kept: float
    admitted: float

    @property
    def lift(self) -> float:
        return self.kept / self.admitted if self.admitted > 0 else float("nan")


@dataclass(frozen=True)
class _Stage:
    """A B stage directory read like a bundle (base, tokenizer, vocabulary), no F needed."""

    base: Any
    tokenizer: Any
    keyword_vocab: Any
    max_text_len: int
    top_keywords: int = 15


def _open(path: Path) -> _Stage:
    path = Path(path)
    if (path / "base.safetensors").exists():
        b = Bundle.load(path)
        return _Stage(b.base, b.tokenizer, b.keyword_vocab, b.cfg.base.max_text_len,
                      b.cfg.top_keywords)  # fmt: skip
    m = load_encoder(path)
    return _Stage(m, load_tokenizer(path / TOKENIZER_DIR), KeywordVocab.load(path / KEYWORDS_FILE),
                  m.cfg.max_text_len)  # fmt: skip


def gallery_probs(
    bundle: Any, images: np.ndarray, texts: list[str], batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(I, L) image-head and (T, L) text-head probabilities of B."""
    base = bundle.base.eval()
    pi, pt = [], []
    with torch.inference_mode():
        for s in range(0, len(images), batch):
            x = torch.from_numpy(np.asarray(images[s : s + batch], dtype=np.float32))
            out = base.encode_image(x, torch.ones(x.shape[:2], dtype=torch.bool))
            assert out.logits is not None
            pi.append(torch.sigmoid(out.logits.float()).numpy())
        for s in range(0, len(texts), batch):
            ids, m = tokenize(bundle.tokenizer, texts[s : s + batch], bundle.max_text_len)
            out = base.encode_text(ids, m)
            assert out.logits is not None
            pt.append(torch.sigmoid(out.logits.float()).numpy())
    return np.concatenate(pi), np.concatenate(pt)


def _query_lists(
    bundle: Any, texts: list[str], pt: np.ndarray, mode: str, top: int
) -> list[tuple[list[str], list[float]]]:
    """Each query's ranked (labels, probs) under a text-keyword mode (as Bundle.encode_texts)."""
    vocab = bundle.keyword_vocab
    assert vocab is not None
    labels = vocab.labels
    order = np.argsort(-pt, axis=1)[:, :top]
    out = []
    for t, text in enumerate(texts):
        pred = [labels[j] for j in order[t]]
        pp = [float(pt[t, j]) for j in order[t]]
        if mode == "pred":
            out.append((pred, pp))
            continue
        ext = vocab.labels_of_text(text)
        if not ext:  # as KeywordOptions.select: a text naming no label uses the predicted ones
            out.append((pred, pp))
            continue
        # Extracted nouns count as certain; most images-first vocab order -> rarest last.
        if mode == "ext":
            out.append((ext, [1.0] * len(ext)))
        else:
            seen = set(ext)
            rest = [(w, p) for w, p in zip(pred, pp) if w not in seen]
            out.append((ext + [w for w, _ in rest], [1.0] * len(ext) + [p for _, p in rest]))
    return out


def screen_point(
    rank: np.ndarray,
    truth: np.ndarray,
    queries: list[tuple[list[str], list[float]]],
    col: dict[str, int],
    r_i: int,
    r_t: int,
    alpha: float = 0.0,
    p_min: float = 0.0,
    stop: float = 1.0,
    miss: float = 0.0,
    size: int = 10,
    gain: float = 0.0,
) -> tuple[float, float]:
    """(kept, admitted) of the screen: gallery items store their labels of rank < r_i."""
    g = rank < r_i  # (I, L)
    share = g.mean(0)  # (L,)
    names = list(col)
    shares = {w: float(share[col[w]]) for w in names}
    q = np.zeros((len(queries), g.shape[1]), dtype=np.float32)
    for t, (ls, ps) in enumerate(queries):
        for w in select_labels(ls, ps, r_t, shares=shares, alpha=alpha, p_min=p_min, stop=stop,
                               miss=miss, gain=gain):  # fmt: skip
            q[t, col[w]] = 1.0
    shared = (q @ g.T.astype(np.float32)) > 0  # (T, I)
    # As the engine: a query with no label, or whose screen admits fewer than `size`
    # documents, is searched unscreened (relaxed), which admits the whole gallery.
    relaxed = (q.sum(1) == 0) | (shared.sum(1) < min(size, g.shape[0]))
    shared[relaxed] = True
    kept = shared[np.arange(len(truth)), truth]
    return float(kept.mean()), float(shared.mean())


def screen_curve(
    bundle_dir: Path,
    images: np.ndarray,
    texts: list[str],
    truth: np.ndarray,
    image_labels: np.ndarray | None,
    r_i_values: tuple[int, ...] = (3, 5, 10, 15),
    r_t_values: tuple[int, ...] = (1, 2, 3, 5, 8),
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0),
    modes: tuple[str, ...] = ("pred", "ext", "merge"),
    stop: float = 1.0,
    misses: tuple[float, ...] = (0.3, 0.1, 0.03, 0.01, 0.003),
    miss_r_t: tuple[int, ...] = (3, 5, 8),
    gains: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0),
    gain_r_t: int = 12,
    probs_file: Path | None = None,
    size: int = 10,
) -> dict[str, Any]:
    bundle = _open(Path(bundle_dir))
    vocab = bundle.keyword_vocab
    assert vocab is not None
    col = {w: j for j, w in enumerate(vocab.labels)}
    if probs_file is not None and Path(probs_file).exists():
        z = np.load(probs_file)
        pi, pt = z["image"], z["text"]
        if pi.shape[0] != len(images) or pt.shape[0] != len(texts):
            raise ValueError(f"{probs_file}: cached for other data ({pi.shape}, {pt.shape})")
    else:
        pi, pt = gallery_probs(bundle, images, texts)
        if probs_file is not None:
            np.savez_compressed(probs_file, image=pi, text=pt)
    rank = np.argsort(np.argsort(-pi, axis=1), axis=1)  # (I, L) rank of each label
    out: dict[str, Any] = {"n_images": len(images), "n_queries": len(texts), "labels": len(vocab)}
    if image_labels is not None:
        mi = mean_average_precision(pi, image_labels)
        mt = mean_average_precision(pt, image_labels[truth])
        out["map"] = {
            "image": mi.macro,
            "image_micro": mi.micro,
            "text": mt.macro,
            "text_micro": mt.micro,
        }
    top3 = Counter(tuple(sorted(np.argsort(-pt[t])[:3].tolist())) for t in range(len(texts)))
    common, n_common = top3.most_common(1)[0]
    out["collapse"] = {
        "distinct_text_top3": len(top3),
        "most_common_text_top3": [vocab.labels[j] for j in common],
        "share_most_common": n_common / len(texts),
        "distinct_image_top3": len(
            {tuple(sorted(np.argsort(-pi[i])[:3].tolist())) for i in range(len(pi))}
        ),
    }
    points = []
    for mode in modes:
        qs = _query_lists(bundle, texts, pt, mode, bundle.top_keywords)
        for r_i in r_i_values:
            for alpha in alphas:
                grid = [(r_t, 0.0, 0.0) for r_t in r_t_values]
                grid += [(r_t, m, 0.0) for m in misses for r_t in miss_r_t]
                grid += [(gain_r_t, 0.0, g) for g in gains]
                for r_t, miss, gain in grid:
                    k, a = screen_point(rank, truth, qs, col, r_i, r_t, alpha=alpha, stop=stop,
                                        miss=miss, size=size, gain=gain)  # fmt: skip
                    points.append({"mode": mode, "r_i": r_i, "alpha": alpha, "r_t": r_t,
                                   "miss": miss, "gain": gain, "kept": k, "admitted": a,
                                   "lift": k / a if a else None})  # fmt: skip
    out["points"] = points
    return out
