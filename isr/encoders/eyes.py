"""What a bundle's image tower was trained to see: its image backbone, preprocessing and
region reduction, with a fingerprint.

Entry points: :class:`Eyes` (frozen, saved as ``image_backbone.json`` beside a bundle's
weights or a precomp data directory's features), :func:`eyes_of_dir` (the record of a local
Hugging Face vision checkpoint directory, read from its files: no model is loaded) and
:func:`check_eyes` (refuse features from another backbone, naming both).

``kind`` is "hf" (a local Hugging Face vision checkpoint: ``path``, ``model_type``, the
preprocessor config, and the sha256 of its config, preprocessor and weight files) or "none"
(precomputed region features, e.g. SCAN precomp or the synthetic world: nothing to compare).
A bundle without the file was written before bundles recorded their eyes: unknown, and only
the feature width is checked, as before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from isr.errors import Conflict, CorruptIndex, InvalidInput, NotFound

__all__ = ["EYES_FILE", "Eyes", "check_eyes", "eyes_of_dir", "read_eyes", "write_eyes"]

EYES_FILE = "image_backbone.json"
# the files of a checkpoint that decide its features; tokenizer and README files do not
_HASHED = ("config.json", "preprocessor_config.json")
_WEIGHTS = (".safetensors",)


@dataclass(frozen=True)
class Eyes:
    """kind: "hf" or "none". reduction: how patch tokens became regions
    ({"method": "kmeans", "k": 32, "cls": "dropped"}). feature_dim: D of the regions."""

    kind: Literal["hf", "none"]
    name: str = ""  # the checkpoint directory's name, for messages
    path: str = ""  # where it was when the features were extracted
    model_type: str = ""
    fingerprint: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    reduction: dict[str, Any] = field(default_factory=dict)
    feature_dim: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("hf", "none"):
            raise InvalidInput(f"image backbone kind {self.kind!r} is not 'hf' or 'none'")
        if self.kind == "hf" and not self.fingerprint:
            raise InvalidInput("an 'hf' image backbone record needs its fingerprint")

    def describe(self) -> str:
        """One phrase naming these eyes, for error messages."""
        if self.kind == "none":
            return "precomputed region features (no image backbone)"
        k = self.reduction.get("k", "?")
        return (
            f"{self.name or self.path} ({self.model_type}, fingerprint {self.fingerprint[:12]}, "
            f"k-means {k} regions)"
        )

    def same(self, other: Eyes) -> bool:
        """The same features: same backbone weights/preprocessing and the same reduction."""
        if self.kind != other.kind:
            return False
        return self.kind == "none" or (
            self.fingerprint == other.fingerprint and self.reduction == other.reduction
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Eyes:
        if not isinstance(d, dict):
            raise CorruptIndex(f"{where}: expected a JSON object")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise CorruptIndex(f"{where}: unknown fields {unknown}")
        try:
            return cls(**d)
        except (TypeError, InvalidInput) as e:
            raise CorruptIndex(f"{where}: {e}") from e


def eyes_of_dir(path: str | Path, k: int, feature_dim: int = 0) -> Eyes:
    """The record of a local HF vision checkpoint directory reduced to `k` regions."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise NotFound(f"vision backbone directory {path} has no config.json")
    h = hashlib.sha256()
    weights = sorted(p for p in path.iterdir() if p.name.endswith(_WEIGHTS))
    if not weights:
        raise NotFound(f"vision backbone directory {path} has no .safetensors weights")
    for p in [path / n for n in _HASHED if (path / n).is_file()] + weights:
        h.update(p.name.encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        pre_file = path / "preprocessor_config.json"
        pre = json.loads(pre_file.read_text(encoding="utf-8")) if pre_file.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndex(f"vision backbone in {path}: unreadable JSON ({e})") from e
    return Eyes(
        kind="hf",
        name=path.resolve().name,
        path=str(path.resolve()),
        model_type=str(cfg.get("model_type", "")),
        fingerprint=h.hexdigest(),
        preprocessing=pre if isinstance(pre, dict) else {},
        reduction={"method": "kmeans", "k": int(k), "cls": "dropped"},
        feature_dim=int(feature_dim),
    )


def read_eyes(directory: str | Path) -> Eyes | None:
    """The record in a bundle or data directory; None when it has none (unknown)."""
    p = Path(directory) / EYES_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndex(f"{p}: not valid JSON ({e})") from e
    return Eyes.from_dict(d, str(p))


def write_eyes(directory: str | Path, eyes: Eyes) -> Path:
    p = Path(directory) / EYES_FILE
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(eyes.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(p)
    return p


def check_eyes(bundle: Eyes | None, source: Eyes | None, bundle_name: str = "the bundle") -> None:
    """Refuse a source whose features come from other eyes than the bundle was trained on.
    Unknown on either side (None) passes: only the feature width can be checked then."""
    if bundle is None or source is None or bundle.same(source):
        return
    raise Conflict(
        f"{bundle_name} was trained on {bundle.describe()}; this load extracts features with "
        f"{source.describe()}. Its image tower would read features it never saw: use the "
        "backbone the bundle was trained with, or train a bundle on this one"
    )
