"""An index's screen scale and gain measured on a labelled split (isr.eval.screen_calibrate,
`isr index calibrate-screen`, EmbeddedIndex.set_keyword_defaults)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from isr.app.cli import main
from isr.errors import Conflict, InvalidInput
from isr.eval.screen_calibrate import calibrate, measure_scale, screen_at
from isr.eval.screen_curve import screen_point
from isr.plugin import EmbeddedIndex
from isr.plugin.config import IndexConfig


def _captions_world(n: int = 120, c: int = 4, L: int = 30, seed: int = 0):
    """Image queries against captions: an image has 4 labels, each of its captions stores 2 of
    them (R_I 2), so a caption stores a label its image has with chance 0.5 while the image
    head's p (the image has it) is ~0.9."""
    rng = np.random.default_rng(seed)
    has = np.argsort(rng.random((n, L)), 1)[:, :4]  # (n, 4) label ids
    q = np.full((n, L), 0.02) + rng.random((n, L)) * 0.01  # (n, L) image-head p
    np.put_along_axis(q, has, 0.9, 1)
    score = rng.random((n * c, L)) * 0.1
    for t in range(n * c):
        score[t, rng.choice(has[t // c], 2, replace=False)] += 1.0  # the two it stores
    rank = np.argsort(np.argsort(-score, 1), 1)
    rel = [np.arange(c * t, c * t + c) for t in range(n)]
    return q, rank, rel, 2


def test_measured_scale_is_the_stored_share_over_p() -> None:
    q, rank, rel, r_i = _captions_world()
    s = measure_scale(q, rank, rel, r_i, k=1)
    assert s == pytest.approx(0.5 / 0.905, abs=0.05)  # a caption stores a top label half the time
    assert measure_scale(q, rank, rel, r_i, k=1) <= 1.0


def test_screen_at_is_the_curve_arithmetic() -> None:
    """An image gallery (one relevant image per query): screen_at and screen_point agree."""
    rng = np.random.default_rng(1)
    pi, pt = rng.random((50, 12)), rng.random((150, 12))
    truth = np.arange(150) // 3
    rank = np.argsort(np.argsort(-pi, 1), 1)
    names = [str(j) for j in range(12)]
    order = np.argsort(-pt, 1)[:, :15]
    qs = [([names[j] for j in order[t]], [float(pt[t, j]) for j in order[t]]) for t in range(150)]
    want = screen_point(
        rank, truth, qs, {w: j for j, w in enumerate(names)}, 3, 4, alpha=1.0, gain=0.3
    )
    got = screen_at(pt, rank, [np.array([t]) for t in truth], 3,
                    {"rule": "cost", "alpha": 1.0, "r_t": 4, "gain": 0.3})  # fmt: skip
    assert got == pytest.approx(want)


def test_calibrate_picks_the_least_admitting_pair_that_keeps_the_target() -> None:
    q, rank, rel, r_i = _captions_world()
    opts = {"rule": "cost", "alpha": 1.0, "r_t": 8}
    cal = calibrate(q, rank, rel, r_i, opts, kept=0.95)
    assert cal.met and cal.kept >= 0.95
    ok = [p for p in cal.points if p["kept"] >= 0.95]
    assert cal.admitted == min(p["admitted"] for p in ok)
    assert screen_at(q, rank, rel, r_i, {**opts, **cal.defaults()}) == pytest.approx(
        (cal.kept, cal.admitted), abs=1e-3
    )
    assert any(p["scale"] == round(cal.measured, 4) for p in cal.points)  # the measured one swept
    none = calibrate(q, rank, rel, r_i, {"r_t": 1}, kept=1.0)  # one label cannot keep all
    assert not none.met and none.kept == max(p["kept"] for p in none.points)
    with pytest.raises(InvalidInput, match="kept target"):
        calibrate(q, rank, rel, r_i, opts, kept=1.5)
    with pytest.raises(InvalidInput, match="relevant"):
        calibrate(q, rank, [np.array([], int)] * len(q), r_i, opts)
    with pytest.raises(InvalidInput, match="one vocabulary"):
        calibrate(q[:, :5], rank, rel, r_i, opts)


def test_set_keyword_defaults_is_recorded_and_checked(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    path = tmp_path / "i"
    EmbeddedIndex.create(path, small_config).close()
    with EmbeddedIndex.open(path) as idx:
        new = idx.set_keyword_defaults({"rule": "cost", "gain": 0.05, "scale": 0.5})
        assert new.keywords == {"rule": "cost", "gain": 0.05, "scale": 0.5}
        with pytest.raises(InvalidInput, match="scale must be a number"):
            idx.set_keyword_defaults({"scale": 3.0})
        with pytest.raises(InvalidInput, match="above the stored r_i"):
            idx.set_keyword_defaults({"r_i": 9})
        assert idx.config.keywords["scale"] == 0.5  # a refused change leaves the last one
    with EmbeddedIndex.open(path, readonly=True) as r:
        assert r.config.keywords == {"rule": "cost", "gain": 0.05, "scale": 0.5}
        with pytest.raises(Conflict, match="opened read-only"):
            r.set_keyword_defaults({})
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["config"]["keywords"]["gain"] == 0.05
    # a crash between the table's commit and the manifest's: the manifest is one step behind
    manifest["config"]["keywords"] = {}
    (path / "manifest.json").write_text(json.dumps(manifest))
    with EmbeddedIndex.open(path, readonly=True) as r:
        assert r.config.keywords["gain"] == 0.05  # the document table's copy is the truth
    with EmbeddedIndex.open(path) as w:  # a writer writes the manifest again
        assert w.config.keywords["gain"] == 0.05
    assert json.loads((path / "manifest.json").read_text())["config"]["keywords"]["gain"] == 0.05


def test_set_keyword_defaults_refuses_pending_writes(
    tmp_path: Path, small_config: IndexConfig
) -> None:
    from conftest import random_items

    with EmbeddedIndex.create(tmp_path / "i", small_config) as idx:
        idx.add(["a", "b"], random_items(2, seed=0))
        with pytest.raises(Conflict, match="pending writes"):
            idx.set_keyword_defaults({"gain": 0.1})
        idx.commit()
        idx.set_keyword_defaults({"gain": 0.1})
        assert len(idx) == 2


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_encoders_train import CFG, VOCAB, world

    from isr.encoders.train import train_stage

    d = tmp_path_factory.mktemp("cal")
    return train_stage("base", CFG, world(200, 0), d / "base", vocab=VOCAB, val=world(40, 1))


def test_calibrate_screen_command(tmp_path: Path, base: Path) -> None:
    """End to end on a tiny world: a caption index's scale and gain measured on its dev split
    and recorded; --dry-run records nothing; a bundle-less index without --bundle is refused."""
    from test_encoders_train import world

    va = world(40, 1)
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "dev_ims.npy", np.asarray(va.images, dtype=np.float32))
    (data / "dev_caps.txt").write_text("\n".join(va.captions) + "\n")
    cfg = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=5, modality="text")
    path = tmp_path / "captions"
    EmbeddedIndex.create(path, cfg).close()
    r = CliRunner()
    args = ["index", "calibrate-screen", str(path), "--data", str(data)]
    res = r.invoke(main, args)
    assert res.exit_code != 0 and "--bundle" in res.output
    out = tmp_path / "cal.json"
    res = r.invoke(main, [*args, "--bundle", str(base), "--dry-run", "--out", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert 0 < got["scale"] <= 1 and got["gain"] > 0 and got["points"]
    with EmbeddedIndex.open(path, readonly=True) as idx:
        assert idx.config.keywords == {}
    res = r.invoke(main, [*args, "--bundle", str(base), "--kept", "0.9"])
    assert res.exit_code == 0, res.output
    with EmbeddedIndex.open(path, readonly=True) as idx:
        kw = idx.config.keywords
    assert kw["rule"] == "cost" and "scale" in kw and "gain" in kw  # over the caption defaults
    assert "recorded keyword defaults" in res.output
