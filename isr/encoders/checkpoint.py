"""Save and load tensors and encoders: safetensors + JSON, never pickle.

Entry points: :func:`save_encoder` / :func:`load_encoder` (a directory holding ``config.json``
and ``model.safetensors``), :func:`read_tensors` / :func:`write_tensors` (one safetensors file,
errors naming it), :func:`check_state` (names and shapes against a module).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from isr.encoders.config import EncoderConfig, read_json, write_json
from isr.encoders.model import DualEncoder
from isr.errors import CorruptIndex

__all__ = [
    "CONFIG_FILE",
    "LOG_FILE",
    "METRICS_FILE",
    "TOKENIZER_DIR",
    "WEIGHTS_FILE",
    "check_state",
    "load_encoder",
    "read_metadata",
    "read_tensors",
    "save_encoder",
    "write_tensors",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
LOG_FILE = "train_log.jsonl"
METRICS_FILE = "metrics.json"


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file atomically (temp file + rename), with optional string metadata."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata)
    tmp.replace(path)


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata in a safetensors file's header ({} when there is none)."""
    if not path.is_file():
        raise CorruptIndex(f"missing file {path}")
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptIndex(f"{path}: corrupted safetensors file ({e})") from e


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file on CPU; a missing or damaged file raises CorruptIndex naming it."""
    if not path.is_file():
        raise CorruptIndex(f"missing file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptIndex(f"{path}: corrupted safetensors file ({e})") from e


def check_state(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Raise CorruptIndex unless ``state`` has exactly the module's tensor names and shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CorruptIndex(
            f"{source}: weights do not match the config: missing {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''}, unexpected {extra[:3]}"
            f"{'...' if len(extra) > 3 else ''}"
        )
    for k, t in state.items():
        if tuple(t.shape) != tuple(own[k].shape):
            raise CorruptIndex(
                f"{source}: tensor {k} has shape {tuple(t.shape)} but the config implies "
                f"{tuple(own[k].shape)}"
            )


def save_encoder(model: DualEncoder, out: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into the directory ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    write_tensors(out / WEIGHTS_FILE, model.state_dict(), metadata)
    write_json(out / CONFIG_FILE, model.cfg.to_dict())


def load_encoder(
    path: Path, device: str | torch.device = "cpu", weights: str = WEIGHTS_FILE
) -> DualEncoder:
    """Rebuild a DualEncoder from ``config.json`` + ``weights`` in ``path`` (eval mode)."""
    cfg = EncoderConfig.from_dict(read_json(path / CONFIG_FILE), str(path / CONFIG_FILE))
    return load_weights(cfg, path / weights, device)


def load_weights(cfg: EncoderConfig, file: Path, device: str | torch.device = "cpu") -> DualEncoder:
    """A DualEncoder of ``cfg`` with its weights from the safetensors ``file`` (eval mode)."""
    state = read_tensors(file)
    model = DualEncoder(cfg)
    check_state(model, state, file)
    model.load_state_dict(state)
    return model.to(device).eval()
