"""The device rule, one copy for the encoders, the scorer and the app: the device asked for, else
CUDA when there is one. Entry point: :func:`pick_device`."""

from __future__ import annotations

import torch

from isr.errors import InvalidInput

__all__ = ["pick_device"]


def pick_device(device: str | torch.device | None, what: str = "device") -> torch.device:
    """None or "auto": CUDA when present, else the CPU; anything else is checked (an unknown
    name, or CUDA asked for where there is none, raises InvalidInput naming `what`)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except RuntimeError as e:
        raise InvalidInput(f"{what}: unknown device {device!r}: {e}") from e
    if out.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"{what}: device {device!r} asked for, but CUDA is not available")
    return out
