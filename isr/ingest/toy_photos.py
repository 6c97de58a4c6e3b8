"""A folder of generated, captioned photos: coloured shapes on coloured backgrounds.

Entry point: :func:`write_toy_photos(out_dir, n, seed)` -> the captions file. For trying the
photo path end to end (``isr train --images``, ``isr load images``, the search page) where no
real photos may be used; it says nothing about quality on real photos. Each photo is a JPEG
or PNG under a few sub-folders, with a ``captions.jsonl`` (``path``, ``caption``,
``colour``, ``shape``, ``background``: the last three also serve as ``--fields``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["BACKGROUNDS", "COLOURS", "SHAPES", "write_toy_photos"]

COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220),
    "yellow": (240, 220, 40), "white": (250, 250, 250), "black": (15, 15, 15),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"grey": (128, 128, 128), "sand": (210, 190, 140), "sky": (150, 200, 240)}


def write_toy_photos(out_dir: str | Path, n: int, seed: int = 0, size: int = 96) -> Path:
    from PIL import Image, ImageDraw

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    bgs = list(BACKGROUNDS)
    lines = []
    for i in range(n):
        colour = names[int(rng.integers(len(names)))]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        bg = bgs[int(rng.integers(len(bgs)))]
        im = Image.new("RGB", (size, size), BACKGROUNDS[bg])
        d = ImageDraw.Draw(im)
        r = int(rng.integers(size // 6, size // 3))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        box = (cx - r, cy - r, cx + r, cy + r)
        if shape == "circle":
            d.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            d.rectangle(box, fill=COLOURS[colour])
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[colour])
        px = np.asarray(im, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
        im = Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))
        rel = f"{bg}/{i:05d}.{'jpg' if i % 2 else 'png'}"
        (out / bg).mkdir(exist_ok=True)
        im.save(out / rel)
        size_word = "big" if r > size // 4 else "small"
        caption = f"a {size_word} {colour} {shape} on a {bg} background"
        lines.append(json.dumps({"path": rel, "caption": caption, "colour": colour,
                                 "shape": shape, "background": bg}))  # fmt: skip
    cap = out.parent / f"{out.name}-captions.jsonl"
    cap.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return cap
