"""The bundle: encoding records, input validation, save/load and damaged directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerBase

from isr.encoders.bundle import BASE_FILE, FAST_FILE, HEADS_FILE, Bundle
from isr.encoders.config import BundleConfig, EncoderConfig
from isr.encoders.model import DualEncoder
from isr.encoders.tokenizer import train_tokenizer
from isr.encoders.vocabulary import KeywordVocab
from isr.errors import CorruptIndex, InvalidInput

CAPTIONS = [
    "a dog runs on the beach",
    "two cats sleep on a red sofa",
    "a man rides a bike down the street",
    "children play with a ball in the park",
]
LABELS = tuple(f"label{i}" for i in range(20))


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerBase:
    # Trained once: tokenizer training is not bit-reproducible (huggingface/tokenizers#1794).
    return train_tokenizer(CAPTIONS, 80)


def make_bundle(tok: PreTrainedTokenizerBase) -> Bundle:
    base_cfg = EncoderConfig(
        type="base", vocab_size=len(tok), image_in_dim=12, hidden=16, heads=2, intermediate=32,
        layers=2, dim=8, n_labels=len(LABELS),
    )  # fmt: skip
    fast_cfg = base_cfg.replace(type="fast", dim=6, n_labels=0)
    torch.manual_seed(0)
    base, fast = DualEncoder(base_cfg), DualEncoder(fast_cfg)
    vocab = KeywordVocab(labels=LABELS, min_images=1, counts=tuple(range(20, 0, -1)))
    return Bundle(BundleConfig(base=base_cfg, fast=fast_cfg), base, fast, tok, vocab)


@pytest.fixture(scope="module")
def bundle(tok: PreTrainedTokenizerBase) -> Bundle:
    return make_bundle(tok)


def feats(b: int, m: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(b, m, 12)).astype(np.float32)


def test_facts(bundle: Bundle) -> None:
    assert (bundle.d_fast, bundle.d_frag, bundle.max_frags, bundle.image_in_dim) == (6, 8, 32, 12)
    assert bundle.vocab == list(LABELS)
    assert len(bundle.fingerprint) == 64


def test_encode_texts(bundle: Bundle) -> None:
    long = " ".join(["dog"] * 200)
    enc = bundle.encode_texts(["a dog", CAPTIONS[1], long])
    assert len(enc) == 3 and enc.d_fast == 6 and enc.d_frag == 8
    # [CLS] a dog [SEP] (as wordpieces); the long text is cut to 32 wordpieces.
    n_short = len(bundle.tokenizer("a dog")["input_ids"])
    assert enc.mask.sum(1).tolist()[0] == n_short and enc.mask.sum(1).tolist()[2] == 32
    assert enc.n_frags == 32
    np.testing.assert_allclose(np.linalg.norm(enc.fast, axis=1), 1.0, rtol=1e-5)
    kw = enc.keywords[0]
    assert len(kw.labels) == 15 and set(kw.labels) <= set(LABELS)
    assert list(kw.probs) == sorted(kw.probs, reverse=True)
    assert all(0.0 < p < 1.0 for p in kw.probs)


def test_encode_images_with_masks(bundle: Bundle) -> None:
    x = feats(3, m=40)
    mask = np.ones((3, 40), dtype=bool)
    mask[1, 5:] = False
    x[1, 5:] = np.nan  # padding is ignored, NaN or not
    enc = bundle.encode_images(x, mask)
    assert enc.fragments.shape == (3, 32, 8)
    assert enc.mask.sum(1).tolist() == [32, 6, 32]  # first token + regions, at most 32
    alone = bundle.encode_images(x[1:2, :5])
    np.testing.assert_allclose(alone.fragments[0, :6], enc.fragments[1, :6], atol=1e-5)
    np.testing.assert_allclose(alone.fast, enc.fast[1:2], atol=1e-5)


def test_batch_size_does_not_change_encodings(bundle: Bundle) -> None:
    x = feats(5)
    a, b = bundle.encode_images(x, batch_size=2), bundle.encode_images(x)
    np.testing.assert_allclose(a.fragments, b.fragments, atol=1e-5)
    assert a.keywords == b.keywords or all(
        ka.labels == kb.labels for ka, kb in zip(a.keywords, b.keywords, strict=True)
    )
    t1, t2 = bundle.encode_texts(CAPTIONS, batch_size=3), bundle.encode_texts(CAPTIONS)
    np.testing.assert_allclose(t1.fast, t2.fast, atol=1e-5)
    assert len(bundle.encode_texts([])) == 0 and len(bundle.encode_images(feats(0))) == 0


def test_bad_inputs_name_the_item(bundle: Bundle) -> None:
    with pytest.raises(InvalidInput, match=r"texts\[1\] is empty"):
        bundle.encode_texts(["a dog", "   "])
    with pytest.raises(InvalidInput, match=r"texts\[0\]: expected a string"):
        bundle.encode_texts([3])  # type: ignore[list-item]
    with pytest.raises(InvalidInput, match="got one string"):
        bundle.encode_texts("a dog")
    x = feats(3)
    x[2, 4, 1] = np.nan
    with pytest.raises(InvalidInput, match="image 2 has NaN"):
        bundle.encode_images(x)
    with pytest.raises(InvalidInput, match="feature dim 5, this bundle expects 12"):
        bundle.encode_images(np.zeros((1, 3, 5), np.float32))
    with pytest.raises(InvalidInput, match="image 1 has no regions"):
        bundle.encode_images(feats(2), np.array([[True] * 7, [False] * 7]))
    with pytest.raises(InvalidInput, match="batch_size"):
        bundle.encode_images(feats(2), batch_size=0)


def test_save_load_gives_identical_encodings(bundle: Bundle, tmp_path: Path) -> None:
    bundle.save(tmp_path / "b")
    again = Bundle.load(tmp_path / "b")
    assert again.fingerprint == bundle.fingerprint
    x = feats(4)
    a, b = bundle.encode_images(x), again.encode_images(x)
    np.testing.assert_array_equal(a.fast, b.fast)
    np.testing.assert_array_equal(a.fragments, b.fragments)
    assert a.keywords == b.keywords
    ta, tb = bundle.encode_texts(CAPTIONS), again.encode_texts(CAPTIONS)
    np.testing.assert_array_equal(ta.fragments, tb.fragments)
    assert ta.keywords == tb.keywords
    # Saving the reloaded bundle again changes nothing.
    again.save(tmp_path / "c")
    assert Bundle.load(tmp_path / "c").fingerprint == bundle.fingerprint


def test_fingerprint_follows_the_weights(tok: PreTrainedTokenizerBase) -> None:
    before = make_bundle(tok).fingerprint
    assert make_bundle(tok).fingerprint == before  # same seed, same bytes
    other = make_bundle(tok)
    with torch.no_grad():
        other.fast.proj.bias[0] += 1e-3
    assert other.fingerprint != before


@pytest.fixture
def saved(bundle: Bundle, tmp_path: Path) -> Path:
    return bundle.save(tmp_path / "bundle")


def test_missing_file_is_named(saved: Path) -> None:
    (saved / FAST_FILE).unlink()
    with pytest.raises(CorruptIndex, match=f"missing file .*{FAST_FILE}"):
        Bundle.load(saved)


def test_corrupted_weights_are_named(saved: Path) -> None:
    data = (saved / BASE_FILE).read_bytes()
    (saved / BASE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptIndex, match=f"{BASE_FILE}: corrupted safetensors"):
        Bundle.load(saved)
    (saved / BASE_FILE).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CorruptIndex, match=BASE_FILE):
        Bundle.load(saved)


def test_config_weights_mismatch_is_named(saved: Path) -> None:
    cfg = json.loads((saved / "config.json").read_text())
    cfg["base"]["dim"] = 10
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CorruptIndex, match=f"{BASE_FILE}: tensor proj\\.(weight|bias) has shape"):
        Bundle.load(saved)


def test_damaged_config_and_heads_are_named(saved: Path) -> None:
    (saved / HEADS_FILE).write_bytes(b"")
    with pytest.raises(CorruptIndex, match=HEADS_FILE):
        Bundle.load(saved)
    cfg = json.loads((saved / "config.json").read_text())
    cfg["base"]["type"] = "bert-base"
    (saved / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CorruptIndex, match=r"config\.json\[base\]: encoder type 'bert-base'"):
        Bundle.load(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CorruptIndex, match=r"config\.json: not valid JSON"):
        Bundle.load(saved)


def test_missing_vocabulary_is_named(saved: Path) -> None:
    (saved / "keywords.json").unlink()
    with pytest.raises(CorruptIndex, match=r"keywords\.json"):
        Bundle.load(saved)


@pytest.mark.parametrize("garble", ["truncate", "wrong_shape"])
def test_garbled_tokenizer_is_named(saved: Path, garble: str) -> None:
    files = list(saved.rglob("tokenizer.json"))
    assert files, "the bundle saves a tokenizer.json"
    path = files[0]
    if garble == "truncate":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:  # valid JSON, not a tokenizer (the case that raised a raw KeyError)
        path.write_text(json.dumps({"model": {"vocab": 3}}))
    with pytest.raises(CorruptIndex, match="tokenizer"):
        Bundle.load(saved)
