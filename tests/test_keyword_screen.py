"""The keyword screen: head forms, the dedicated head stage, query-label rules, per-rank postings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_encoders_train import CFG, VOCAB, world

from isr.encoders.bundle import Bundle, write_bundle
from isr.encoders.config import EncoderConfig
from isr.encoders.head_stage import HeadConfig, train_heads
from isr.encoders.keyword_heads import prior_logits
from isr.encoders.model import DualEncoder
from isr.encoders.record import Keywords
from isr.encoders.train import train_stage
from isr.errors import InvalidInput
from isr.eval.keywords import mean_average_precision
from isr.plugin.embedded.postings import KeywordPostings
from isr.plugin.keyword_rule import select_labels
from isr.plugin.pipeline import KeywordOptions


@pytest.mark.parametrize("head", ["linear", "attn", "maxsim"])
def test_every_head_form_gives_logits_and_gradients(head: str) -> None:
    cfg = EncoderConfig(type="base", vocab_size=50, image_in_dim=8, hidden=16, layers=1,
                        heads=2, intermediate=32, dim=8, n_labels=5, keyword_head=head)  # fmt: skip
    m = DualEncoder(cfg)
    ids = torch.randint(5, 50, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 4:] = False
    t = m.encode_text(ids, mask)
    v = m.encode_image(torch.randn(3, 4, 8), torch.ones(3, 4, dtype=torch.bool))
    assert t.logits is not None and t.logits.shape == (3, 5)
    assert v.logits is not None and v.logits.shape == (3, 5)
    (t.logits.sum() + v.logits.sum()).backward()
    assert m.kw_text.bias.grad is not None and m.kw_text.bias.grad.abs().sum() > 0
    # padding must not change a text's logits
    ids2 = ids.clone()
    ids2[0, 4:] = 7
    m.eval()
    a = m.encode_text(ids, mask).logits
    b = m.encode_text(ids2, mask).logits
    assert a is not None and b is not None
    assert torch.allclose(a[0], b[0], atol=1e-5)


def test_unknown_head_is_refused() -> None:
    with pytest.raises(InvalidInput, match="keyword_head"):
        EncoderConfig(type="base", vocab_size=50, image_in_dim=8, n_labels=3, keyword_head="x")
    with pytest.raises(InvalidInput, match="loss"):
        HeadConfig(loss="focal")


def test_prior_logits_are_log_odds() -> None:
    y = np.zeros((100, 2), np.float32)
    y[:10, 0] = 1
    y[:90, 1] = 1
    p = torch.sigmoid(prior_logits(y, eps=0.0))
    assert p.tolist() == pytest.approx([0.1, 0.9], abs=1e-6)


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("heads")
    tr, va = world(200, 0), world(40, 1)
    base = train_stage("base", CFG, tr, d / "base", vocab=VOCAB, val=va)
    fast = train_stage("shrink-fast", CFG, tr, d / "fast", vocab=VOCAB, val=va, teacher_dir=base)
    return base, fast


@pytest.mark.parametrize("head,loss", [("linear", "asl"), ("attn", "asl"), ("linear", "bce")])
def test_head_stage_learns_the_labels_on_a_frozen_network(
    stages: tuple[Path, Path], tmp_path: Path, head: str, loss: str
) -> None:
    base, fast = stages
    tr, va = world(200, 0), world(40, 1)
    assert tr.labels is not None and va.labels is not None
    cfg = HeadConfig(head=head, loss=loss, epochs=8, batch_size=64, lr=1e-2)
    out = train_heads(
        base, tmp_path / "h", vocab=VOCAB, train_images=tr.images,
        train_texts=list(tr.captions), train_labels=tr.labels,
        text_image=np.arange(1000) // 5, val_images=va.images, val_texts=list(va.captions),
        val_labels=va.labels, val_text_image=np.arange(200) // 5, cfg=cfg,
        map_fn=mean_average_precision, log=lambda s: None,
    )  # fmt: skip
    before = {k: v.clone() for k, v in DualEncoder.state_dict(_load(base)).items()}
    after = _load(out).state_dict()
    for k, v in before.items():  # the network is frozen: only the heads change
        if not k.startswith("kw_"):
            assert torch.equal(v, after[k]), k
    bundle = Bundle.load(write_bundle(out, fast, tmp_path / "bundle"))
    enc = bundle.encode_texts(["a dog with a cat and a kite"])
    assert enc.keywords[0].extracted == ("dog", "cat", "kite")  # vocabulary order
    hist = json.loads((out / "metrics.json").read_text())["history"]
    assert len(hist) == 8 and all(0 <= r["val"]["map_text"] <= 1 for r in hist)
    if head == "attn":
        # reading every token, the text head ranks the concepts a text names first (the
        # first-token linear head of this 4-epoch B does not: the max-sim loss barely
        # shapes token 0, which is the collapse this stage is measured against)
        assert set(enc.keywords[0].labels[:3]) == {"dog", "cat", "kite"}
        enc2 = bundle.encode_texts(["a boat with a bird and a hat"])
        assert set(enc2.keywords[0].labels[:3]) == {"boat", "bird", "hat"}
        assert hist[-1]["val"]["map_text"] > 0.9


def _load(path: Path) -> DualEncoder:
    from isr.encoders.checkpoint import load_encoder

    return load_encoder(path)


def test_select_labels_by_cost() -> None:
    labels, probs = ("man", "dog", "frisbee"), (0.9, 0.8, 0.5)
    shares = {"man": 0.6, "dog": 0.1, "frisbee": 0.01}
    assert select_labels(labels, probs, 2) == ("man", "dog")  # the paper's rank order
    # at alpha 1, log p - log s: frisbee (3.9) > dog (2.1) > man (0.4)
    assert select_labels(labels, probs, 2, shares=shares, alpha=1.0) == ("frisbee", "dog")
    assert select_labels(labels, probs, 3, shares=shares, stop=0.5) == ("dog", "frisbee")
    assert select_labels(labels, probs, 3, p_min=0.6) == ("man", "dog")
    assert select_labels(labels, probs, 3, mass=0.4) == ("man",)
    # miss: stop once prod(1 - p) <= miss: 0.1 after man, 0.02 after dog, 0.01 after frisbee
    assert select_labels(labels, probs, 3, miss=0.1) == ("man",)
    assert select_labels(labels, probs, 3, miss=0.05) == ("man", "dog")
    assert select_labels(labels, probs, 3, miss=0.001) == labels
    assert select_labels(labels, (0.3, 0.2, 0.1), 2, miss=0.05) == ("man", "dog")  # r_t caps
    assert KeywordOptions(r_t=3, miss=0.05).select(Keywords(labels, probs)) == ("man", "dog")


class _Shares:
    def __init__(self, shares: dict[str, float]) -> None:
        self.shares = shares

    def label_shares(self, labels: tuple[str, ...], r_i: int | None = None) -> dict[str, float]:
        return {w: self.shares[w] for w in labels if w in self.shares}


def test_select_labels_by_gain() -> None:
    labels, probs = ("man", "dog", "frisbee"), (0.9, 0.8, 0.5)
    shares = {"man": 0.6, "dog": 0.1, "frisbee": 0.01}
    # rank order; after man none_right = 0.1: dog adds 0.1 * 0.8 = 0.08 kept for 0.1 admitted
    # (0.8 per share); after dog none_right = 0.02: frisbee adds 0.01 for 0.01 (1.0 per share)
    assert select_labels(labels, probs, 3, shares=shares, gain=0.5) == labels
    assert select_labels(labels, probs, 3, shares=shares, gain=0.9) == ("man",)  # stops at dog
    assert select_labels(labels, probs, 3, shares=shares, gain=100.0) == ("man",)  # first: always
    assert select_labels(labels, probs, 2, shares=shares, gain=0.5) == ("man", "dog")  # r_t caps
    # a cheap label is worth more than an expensive one at equal evidence
    cheap = {"man": 0.6, "dog": 0.01, "frisbee": 0.01}
    assert select_labels(labels, probs, 3, shares=cheap, gain=5.0) == ("man", "dog")
    # in the cost order (alpha 1): frisbee, dog, man; man adds 0.5 * 0.2 * 0.9 / 0.6 = 0.15
    assert select_labels(labels, probs, 3, shares=shares, alpha=1.0, gain=0.2) == (
        "frisbee", "dog",
    )  # fmt: skip
    opt = KeywordOptions(r_t=3, gain=0.9)
    assert opt.select(Keywords(labels, probs), backend=_Shares(shares)) == ("man",)
    with pytest.raises(InvalidInput, match=r"keywords\.gain need the labels' document"):
        opt.select(Keywords(labels, probs), backend=object())
    with pytest.raises(InvalidInput, match="gain must be a number"):
        KeywordOptions(gain=-1.0)


def test_scale_reads_the_probabilities_as_smaller_chances() -> None:
    labels, probs = ("man", "dog", "frisbee"), (0.9, 0.8, 0.5)
    assert select_labels(labels, probs, 3, miss=0.3) == ("man",)  # 1 - 0.9 <= 0.3
    # at scale 0.5: 0.45, 0.4, 0.25; prod(1 - q) = 0.55, 0.33, 0.2475: all three until <= 0.3
    assert select_labels(labels, probs, 3, miss=0.3, scale=0.5) == labels
    assert select_labels(labels, probs, 2, scale=0.5) == ("man", "dog")  # ranks unchanged
    shares = {"man": 0.6, "dog": 0.1, "frisbee": 0.01}
    assert (
        KeywordOptions(r_t=3, miss=0.3, scale=0.5).select(
            Keywords(labels, probs), backend=_Shares(shares)
        )
        == labels
    )
    with pytest.raises(InvalidInput, match="scale must be > 0"):
        KeywordOptions(scale=0.0)
    with pytest.raises(InvalidInput, match="scale must be a number"):
        KeywordOptions(scale=2.0)


def test_keyword_options_text_modes() -> None:
    kw = Keywords(("man", "shirt", "dog"), (0.9, 0.8, 0.3), extracted=("frisbee",))
    assert KeywordOptions(r_t=2).select(kw) == ("man", "shirt")
    assert KeywordOptions(r_t=2, text="ext").select(kw) == ("frisbee",)
    assert KeywordOptions(r_t=2, text="merge").select(kw) == ("frisbee", "man")
    img = Keywords(("man", "shirt"), (0.9, 0.8))  # an image: always its predicted labels
    assert KeywordOptions(r_t=1, text="ext").select(img) == ("man",)
    with pytest.raises(InvalidInput, match="text"):
        KeywordOptions(text="both")
    with pytest.raises(InvalidInput, match="document frequencies"):
        KeywordOptions(rule="cost", alpha=1.0).select(kw, backend=object())


def test_per_rank_postings(tmp_path: Path) -> None:
    p = KeywordPostings(tmp_path, r_i=3, n_rows=0)
    p.append(np.array([[0, 1, 2], [1, 0, -1], [2, -1, -1]], dtype=np.int32))
    p.publish(3)
    assert sorted(p.rows_for([0], "any")) == [0, 1]
    assert sorted(p.rows_for([0], "any", r_i=1)) == [0]
    assert sorted(p.rows_for([2], "any", r_i=2)) == [2]
    assert sorted(p.rows_for([2], "any", r_i=3)) == [0, 2]
    assert p.document_frequency(1) == {0: 1, 1: 1, 2: 1}
    with pytest.raises(InvalidInput, match="r_i"):
        p.rows_for([0], "any", r_i=4)


def test_screen_curve_sweeps_rules_and_caches_the_probabilities(
    stages: tuple[Path, Path], tmp_path: Path
) -> None:
    from isr.eval.screen_curve import screen_curve

    base, _ = stages
    va = world(40, 1)
    assert va.labels is not None
    texts = list(va.captions)
    truth = np.arange(len(texts)) // 5
    cache = tmp_path / "p.npz"
    kw = dict(r_i_values=(3, 8), r_t_values=(1, 3), alphas=(0.0, 1.0), modes=("pred",),
              misses=(0.1,), miss_r_t=(5,), gains=(0.5,), probs_file=cache)  # fmt: skip
    res = screen_curve(base, va.images, texts, truth, va.labels, **kw)  # type: ignore[arg-type]
    assert cache.exists()
    pts = res["points"]
    assert len(pts) == 2 * 2 * (2 + 1 + 1)  # R_I x alpha x (R_T values + miss + gain points)
    for p in pts:
        assert 0 <= p["kept"] <= 1 and 0 < p["admitted"] <= 1
    # one point against a direct count: image i stores its 8 most likely labels, a query
    # uses its text head's top 3, an item is admitted when they share one; a screen admitting
    # under 10 items is relaxed (everything admitted), as in the engine
    z = np.load(cache)
    pi, pt = z["image"], z["text"]
    stored = [set(np.argsort(-pi[i])[:8].tolist()) for i in range(len(pi))]
    kept, adm = [], []
    for t in range(len(texts)):
        q = set(np.argsort(-pt[t])[:3].tolist())
        ok = np.array([bool(q & s) for s in stored])
        if ok.sum() < 10:
            ok[:] = True
        kept.append(ok[truth[t]])
        adm.append(ok.mean())
    got = next(
        p for p in pts if (p["r_i"], p["alpha"], p["r_t"], p["miss"], p["gain"]) == (8, 0, 3, 0, 0)
    )
    assert got["kept"] == pytest.approx(np.mean(kept)) and got["admitted"] == pytest.approx(
        np.mean(adm)
    )
    # a second run reads the cache: same points without encoding (the images are not read)
    res2 = screen_curve(base, np.zeros_like(va.images), texts, truth, va.labels, **kw)  # type: ignore[arg-type]
    assert res2["points"] == pts


def test_screen_plot_reports_the_dev_picked_setting_on_test() -> None:
    from isr.eval.screen_plot import picked, table

    def pt(r_t: int, kept: float, adm: float, alpha: float = 0.0) -> dict:
        return {"mode": "pred", "r_i": 5, "alpha": alpha, "r_t": r_t, "miss": 0.0, "gain": 0.0,
                "kept": kept, "admitted": adm}  # fmt: skip

    dev = [pt(1, 0.995, 0.3), pt(2, 0.999, 0.5), pt(3, 0.999, 0.6, alpha=0.5)]
    test = [pt(1, 0.98, 0.31), pt(2, 0.996, 0.52), pt(3, 0.999, 0.62, alpha=0.5)]
    # dev picks R_T 1 at >= 99.4% (its least admitted), which keeps only 98% on test
    assert picked(dev, test, 0.994) == test[0]
    assert picked(dev, test, 0.999) == test[1]
    assert picked(dev, test, 0.9999) is None
    md = table({"b": {"points": test}}, {"b": {"points": dev}})
    line = next(r for r in md.splitlines() if ">= 99.4%" in r)
    assert "**52.0%**" in line  # chosen on test: R_T 2
    assert "98.0 / **31.0%**" in line  # chosen on dev, measured on test
