"""Training presets and the estimate of a training's wall time, for ``isr train --preset``.

Entry points: :data:`PRESETS` (name -> TrainConfig fields; ``--config`` fields override
them), :func:`train_fields` (the preset merged with ``--config``, unknown keys refused with
the nearest known name), :func:`estimate_seconds` (times a few real training steps of each
stage's model on random inputs of the data's shapes, then scales by the steps the recipe
will take) and :func:`stage_table` (the final table of a recipe's stages).

- ``tiny``: minutes on 2 CPU cores for a few thousand images (the demo's settings);
- ``small``: a larger model and more epochs, for a first real gallery (tens of minutes);
- ``paper``: the papers' settings (TrainConfig's defaults: hidden 256, 3 layers, 32 codes,
  10 epochs, batch 128), for a GPU.

Screen defaults: :data:`SCREEN_DEFAULTS` (the keyword options a new index records when its
creator names none, see BENCHMARKS.md "Keyword screen" for the curve they come from) and
:func:`keyword_defaults` (``--keyword-defaults JSON`` of ``isr index create`` / ``isr load``).
"""

from __future__ import annotations

import difflib
import json
import math
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from isr.errors import InvalidInput
from isr.plugin.keyword_rule import check_keyword_options

__all__ = [
    "PRESETS", "SCREEN_DEFAULTS", "SCREEN_DEFAULTS_TEXT", "estimate_seconds", "keyword_defaults", "stage_table",
    "train_fields",
]  # fmt: skip

# The keyword options a new index records when its creator names none (a query's own keys win):
# picked on the dev splits (BENCHMARKS.md "Keyword screen (issue 12), session 3"): the cost rule
# (alpha 1) with the gain stop (a further label while its added kept chance per admitted share
# is >= 0.15, at most 12), every stored label (R_I 15). Dev: world10k kept 99.66% admitting 9.5%,
# Flickr30K captions (101 held-out images) 100% / 54.5%, demo world 95.2% / 37.7%; test: world10k
# 99.58% / 9.5% (the miss-0.1 rule before: 99.18% / 6.6%), Flickr 99.6% / 54.6% (99.8% / 61.6%).
SCREEN_DEFAULTS: dict[str, Any] = {"rule": "cost", "alpha": 1.0, "gain": 0.15, "r_t": 12}
# A caption gallery (modality "text", queried by images): an image's label is named by only some
# of its captions, so the image head's p is read as 0.667 p (the share measured on world10k's dev
# split) and the gain stop is lower (picked on that dev split: least admitted at >= 99.4% kept).
# world10k test i2t: kept 99.2% admitting 32.5%, where SCREEN_DEFAULTS keep 85.5% (10.2%) and
# the paper's R_T 3 90.8% (23.9%). Picked on world10k only: on Flickr's i2t (one caption per
# image) it keeps 100% admitting 87% where SCREEN_DEFAULTS keep 98.7% admitting 57%: an index
# measures its own on a labelled split with `isr index calibrate-screen` (Flickr: scale 0.7,
# gain 0.15 -> 99.7% / 65.2%; BENCHMARKS.md "Keyword screen (issue 12), session 4").
SCREEN_DEFAULTS_TEXT: dict[str, Any] = {**SCREEN_DEFAULTS, "gain": 0.02, "scale": 0.667}


def keyword_defaults(
    text: str | None, where: str = "--keyword-defaults", modality: str = "image"
) -> dict[str, Any]:
    """An index's default keyword options from JSON (None: :data:`SCREEN_DEFAULTS`, or
    :data:`SCREEN_DEFAULTS_TEXT` for a caption gallery), checked by the query options' own
    rule, so a bad key or value is refused at creation."""
    if text is None:
        return dict(SCREEN_DEFAULTS_TEXT if modality == "text" else SCREEN_DEFAULTS)
    value = json_object(text, where, "keyword options")
    check_keyword_options(value, where)
    return value


def json_object(text: str | None, where: str, what: str = "settings") -> dict[str, Any]:
    """The JSON object a command-line option carries (``--config '{"epochs": 5}'``); None or
    empty: {}. Bad JSON or another JSON value is an InvalidInput naming the option."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{where}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: expected a JSON object of {what}, got {text!r}")
    return value


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {  # the demo's settings
        "epochs": 4, "batch_size": 64, "lr": 1e-3, "captions_per_epoch": 2, "hidden": 64,
        "heads": 2, "intermediate": 256, "dim": 64, "codes": 8, "val_size": 200,
        "tokenizer_vocab": 2000,
    },
    "small": {
        "epochs": 6, "batch_size": 96, "lr": 5e-4, "captions_per_epoch": 3, "hidden": 128,
        "layers": 3, "heads": 4, "intermediate": 512, "dim": 128, "codes": 16, "val_size": 500,
        "tokenizer_vocab": 4000,
    },
    "paper": {},
}  # fmt: skip
RECIPE_STAGES = {
    "paper": (("inflated", None), ("base", "inflated"), ("fast", "base")),
    "plain": (("base", None), ("fast", None)),
}


def train_fields(preset: str | None, config: dict[str, Any]) -> dict[str, Any]:
    """The preset's fields overridden by --config's; an unknown key names the closest one."""
    from isr.encoders.train import TrainConfig

    known = [f.name for f in fields(TrainConfig)]
    for key in config:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean `{near[0]}`?" if near else f"; known: {', '.join(known)}"
            raise InvalidInput(f"--config: unknown training setting `{key}`{hint}")
    if preset is not None and preset not in PRESETS:
        raise InvalidInput(f"--preset {preset!r} is not one of {', '.join(PRESETS)}")
    return {**(PRESETS[preset] if preset else {}), **config}


def estimate_seconds(
    cfg: Any, n_images: int, m: int, d_in: int, recipe: str, n_labels: int = 0, steps: int = 2
) -> float:
    """Seconds the recipe's training steps will take here: each stage's model (and its teacher's
    forward pass) timed on `steps` random batches after one warm-up, times the steps of the
    recipe. Validation and start-up are not included (a few percent at these sizes)."""
    import torch

    from isr.encoders.config import EncoderConfig
    from isr.encoders.model import DualEncoder

    def model(type_: str) -> DualEncoder:
        return DualEncoder(
            EncoderConfig(
                type=type_, vocab_size=cfg.tokenizer_vocab, image_in_dim=d_in,  # type: ignore[arg-type]
                hidden=cfg.hidden, layers=cfg.layers, heads=cfg.heads,
                intermediate=cfg.intermediate, dim=cfg.dim,
                codes=cfg.codes if type_ == "inflated" else 0, max_frags=cfg.max_frags,
                n_labels=n_labels, max_positions=max(64, cfg.max_text_len),
            )
        )  # fmt: skip

    b = min(cfg.batch_size, max(2, n_images))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg.tokenizer_vocab, (b, min(16, cfg.max_text_len)), generator=g)
    tmask = torch.ones_like(ids, dtype=torch.bool)
    feats = torch.randn(b, m, d_in, generator=g)
    imask = torch.ones(b, m, dtype=torch.bool)
    steps_per_epoch = math.ceil(n_images * cfg.captions_per_epoch / b)
    total = 0.0
    for student, teacher in RECIPE_STAGES[recipe]:
        s = model(student).train()
        t = model(teacher).eval() if teacher else None
        opt = torch.optim.AdamW(s.parameters(), lr=1e-4)
        took = []
        for i in range(steps + 1):
            t0 = time.perf_counter()
            if t is not None:
                with torch.no_grad():
                    t.similarity(t.encode_text(ids, tmask), t.encode_image(feats, imask))
            loss = s.similarity(s.encode_text(ids, tmask), s.encode_image(feats, imask)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:  # the first step pays one-off allocations
                took.append(time.perf_counter() - t0)
        total += sorted(took)[len(took) // 2] * steps_per_epoch * cfg.epochs
    return total


def stage_table(run_dir: Path) -> list[list[Any]]:
    """Rows (stage, epochs, train s, T->I R@1/5/10, I->T R@1/5/10) of a recipe's stages."""
    import json

    metrics = Path(run_dir) / "bundle" / "metrics.json"
    if not metrics.is_file():
        return []
    rows = []
    for name, m in json.loads(metrics.read_text()).get("stages", {}).items():
        v = m.get("val", {})
        secs = sum(float(h.get("seconds", 0.0)) for h in m.get("history", []))
        rows.append([name, m.get("epochs", "-"), round(secs, 1)] + [
            round(float(v.get(f"{d}_r{k}", float("nan"))), 3) for d in ("t2i", "i2t")
            for k in (1, 5, 10)])  # fmt: skip
    return rows
