"""Frozen configs of the encoders, saved as ``config.json`` beside the weights.

Entry points: :class:`EncoderConfig` (one dual encoder: F, B or I) and :class:`BundleConfig`
(the served pair B + F). Both are rebuilt with ``cls(**json)``; behaviour is chosen by the
``type`` field, never by a model name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from isr.errors import CorruptIndex, InvalidInput

__all__ = ["ENCODER_TYPES", "BundleConfig", "EncoderConfig", "read_json", "write_json"]

EncoderType = Literal["fast", "base", "inflated"]
ENCODER_TYPES: tuple[str, ...] = ("fast", "base", "inflated")


@dataclass(frozen=True)
class EncoderConfig:
    """One dual encoder: a transformer shared by the text and image towers.

    type:           "fast" (F, Eq. 3: cos of the first output tokens), "base" (B, Eq. 5: max-sim
                    over the first ``max_frags`` fragments) or "inflated" (I: B plus ``codes``
                    learned code tokens on each side, max-sim over (n+k)(m+k) interactions).
    vocab_size:     wordpiece vocabulary of the tokenizer stored with the model.
    hidden:         transformer width (384 when initialised from MiniLM, 256 by default at random).
    layers, heads:  transformer depth (3, as in the paper) and attention heads.
    intermediate:   feed-forward width (4 * hidden unless a checkpoint says otherwise).
    max_positions:  position-embedding rows (512 for a BERT checkpoint; text uses the first 32).
    image_in_dim:   dimension D of the input region / patch features (projected to ``hidden``).
    dim:            fragment dimension d of the output projection (256 by default).
    codes:          k inflate code tokens appended to each side (0 unless type == "inflated").
    max_text_len:   wordpieces per text, [CLS] and [SEP] included (32).
    max_frags:      fragments kept per side for max-sim, codes not counted (32).
    kmeans_k:       reduce an image with more than k regions to k k-means centres (0: never).
    n_labels:       keyword vocabulary size L; 0 means no keyword heads.
    first_token:    input of each side's first token (whose output is the fast vector):
                    "learned" ([CLS] / a learned image token: the saved models before this
                    field) or "mean" (that plus the mean of the side's other token inputs, so
                    it carries the item from the start; what training now uses).
    code_input:     input of the inflated model's code tokens: "learned" (the code vector
                    alone, identical for every item: the saved models before this field) or
                    "mean" (the code vector plus the mean of the side's token inputs, so each
                    code starts item-specific). Why: constant inputs left the codes' outputs
                    nearly item-independent (cross-item cosine 0.91-0.94 after training), and
                    such fragments are max-sim sinks: 48% of caption words took their max on
                    an image code, whose score is the same for every image, so those words
                    carried neither ranking signal nor gradient (BENCHMARKS.md, issue 13).
    fast_pool:      the fast model's vector (type "fast" only): "first" (the first output token,
                    Eq. 3 as the paper has it; the saved models before this field) or "mean"
                    (the masked mean of every output token of the side, then the same
                    projection). Why: a text tower initialised from all-MiniLM-L6-v2 (trained
                    with mean pooling) keeps a [CLS] output that is the same for every caption
                    (pairwise cosine 1.00 after training as B), so an F reading it started at
                    chance on the caption benchmark (BENCHMARKS.md, issue 13, session 4).
    keyword_head:   the heads' form (:data:`isr.encoders.keyword_heads.KEYWORD_HEADS`):
                    "linear" (the paper's, first token), "attn" or "maxsim" (every fragment).
    """

    type: EncoderType
    vocab_size: int
    image_in_dim: int
    hidden: int = 256
    layers: int = 3
    heads: int = 4
    intermediate: int = 1024
    max_positions: int = 64
    dim: int = 256
    codes: int = 0
    max_text_len: int = 32
    max_frags: int = 32
    kmeans_k: int = 0
    n_labels: int = 0
    keyword_head: str = "linear"
    dropout: float = 0.1
    first_token: Literal["learned", "mean"] = "learned"
    code_input: Literal["learned", "mean"] = "learned"
    fast_pool: Literal["first", "mean"] = "first"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.type not in ENCODER_TYPES:
            raise InvalidInput(f"encoder type {self.type!r} is not one of {ENCODER_TYPES}")
        for name in ("vocab_size", "image_in_dim", "hidden", "layers", "heads", "intermediate"):
            _positive(name, getattr(self, name))
        for name in ("dim", "max_text_len", "max_frags", "max_positions"):
            _positive(name, getattr(self, name))
        for name in ("codes", "kmeans_k", "n_labels", "pad_token_id"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.keyword_head not in ("linear", "attn", "maxsim"):
            raise InvalidInput(
                f"keyword_head {self.keyword_head!r} is not one of 'linear', 'attn', 'maxsim'"
            )
        if self.hidden % self.heads:
            raise InvalidInput(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if (self.codes > 0) != (self.type == "inflated"):
            raise InvalidInput(
                f"codes={self.codes} with type {self.type!r}: only an 'inflated' encoder has "
                "code tokens, and it needs at least one"
            )
        if self.max_text_len > self.max_positions:
            raise InvalidInput(
                f"max_text_len {self.max_text_len} exceeds max_positions {self.max_positions}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidInput(f"dropout must be in [0, 1), got {self.dropout}")
        if self.first_token not in ("learned", "mean"):
            raise InvalidInput(f"first_token must be 'learned' or 'mean', got {self.first_token!r}")
        if self.code_input not in ("learned", "mean"):
            raise InvalidInput(f"code_input must be 'learned' or 'mean', got {self.code_input!r}")
        if self.fast_pool not in ("first", "mean"):
            raise InvalidInput(f"fast_pool must be 'first' or 'mean', got {self.fast_pool!r}")
        if self.fast_pool != "first" and self.type != "fast":
            raise InvalidInput(
                f"fast_pool={self.fast_pool!r} with type {self.type!r}: only a 'fast' encoder "
                "pools its vector (B and I score every fragment)"
            )

    def replace(self, **changes: Any) -> EncoderConfig:
        return EncoderConfig(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> EncoderConfig:
        return _build(cls, d, source)


@dataclass(frozen=True)
class BundleConfig:
    """The served bundle: B supplies fragments and keywords, F the fast vector.

    top_keywords: labels stored per encoded item (R_I = 15 in Cao et al.).
    """

    base: EncoderConfig
    fast: EncoderConfig
    top_keywords: int = 15
    type: Literal["isr-bundle"] = "isr-bundle"
    version: int = 1

    def __post_init__(self) -> None:
        if self.type != "isr-bundle":
            raise InvalidInput(f"bundle type {self.type!r} is not 'isr-bundle'")
        if self.base.type != "base":
            raise InvalidInput(f"bundle base encoder has type {self.base.type!r}, want 'base'")
        if self.fast.type != "fast":
            raise InvalidInput(f"bundle fast encoder has type {self.fast.type!r}, want 'fast'")
        if self.base.image_in_dim != self.fast.image_in_dim:
            raise InvalidInput(
                f"image_in_dim differs: base {self.base.image_in_dim}, "
                f"fast {self.fast.image_in_dim}"
            )
        if self.base.max_text_len != self.fast.max_text_len:
            raise InvalidInput(
                f"max_text_len differs: base {self.base.max_text_len}, "
                f"fast {self.fast.max_text_len}"
            )
        if self.base.vocab_size != self.fast.vocab_size:
            raise InvalidInput(
                f"vocab_size differs: base {self.base.vocab_size}, fast {self.fast.vocab_size}"
            )
        _positive("top_keywords", self.top_keywords)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> BundleConfig:
        d = dict(d)
        for key in ("base", "fast"):
            if not isinstance(d.get(key), dict):
                raise CorruptIndex(f"{source}: field {key!r} missing or not an object")
            d[key] = EncoderConfig.from_dict(d[key], f"{source}[{key}]")
        return _build(cls, d, source)


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise InvalidInput(f"{name} must be > 0, got {value}")


def _build(cls: Any, d: dict[str, Any], source: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CorruptIndex(f"{source}: unknown fields {unknown}; known: {sorted(known)}")
    try:
        return cls(**d)
    except TypeError as e:  # a required field is missing
        raise CorruptIndex(f"{source}: {e}") from e
    except InvalidInput as e:
        raise CorruptIndex(f"{source}: {e}") from e


def read_json(path: Path) -> Any:
    """Read a JSON file, naming it in the error when it is missing or unreadable."""
    if not path.is_file():
        raise CorruptIndex(f"missing file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndex(f"{path}: not valid JSON ({e})") from e


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
