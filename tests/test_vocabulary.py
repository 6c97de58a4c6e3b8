"""The keyword vocabulary: lemmatised nouns, the image threshold, keywords.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from isr.encoders.vocabulary import KeywordVocab, lemmas_of_text
from isr.errors import InvalidInput, NotFound
from isr.ingest.precomp import group_captions, read_captions

FLICKR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "flickr30k"


def test_lemmas_fold_plurals_and_irregular_forms() -> None:
    assert lemmas_of_text("Two dogs and a dog .") == ["dog", "dog"]
    assert lemmas_of_text("Men watch a man") == ["man", "man"]
    assert lemmas_of_text("Children watch a child") == ["child", "child"]
    assert lemmas_of_text("three women") == ["woman"]


def test_lemmas_drop_stop_words_verbs_and_adjectives() -> None:
    # "wearing" is only a verb; "running" after a noun is a verb; "red" before a noun an adjective
    assert lemmas_of_text("A man wearing a red shirt is running in front of the building") == [
        "man",
        "shirt",
        "building",
    ]
    assert lemmas_of_text("the of and with at") == []
    # a noun/verb word reads as a noun after a determiner, as a verb after a noun
    assert lemmas_of_text("A dog stands near a fruit stand") == ["dog", "fruit", "stand"]
    assert lemmas_of_text("A woman 's bag") == ["woman", "bag"]
    assert lemmas_of_text("boys in pants and shorts") == ["boy", "pants", "shorts"]


def test_lemmas_other_word_classes() -> None:
    assert "run" in lemmas_of_text("a man is running", pos=("NOUN", "VERB"))
    assert lemmas_of_text("a red shirt", pos=("ADJ",)) == ["red"]


def _toy() -> list[list[str]]:
    return [
        ["Two dogs play.", "A dog and a cat."],
        ["A dog sleeps on a sofa."],
        ["Men near a car.", "A man drives a car."],
        ["A cat on a couch."],
    ]


def test_build_threshold_order_and_counts() -> None:
    v = KeywordVocab.build(_toy(), min_images=2)
    # dog: images 0, 1; cat: 0, 3; car: image 2 only (twice in one image counts once)
    assert v.labels == ("cat", "dog")
    assert v.counts == (2, 2)
    assert v.n_images == 4 and v.min_images == 2
    v1 = KeywordVocab.build(_toy(), min_images=1)
    assert v1.labels[:2] == ("cat", "dog")  # most images first, then alphabetical
    assert set(v1.labels) == {"cat", "dog", "sofa", "man", "car", "couch"}
    assert KeywordVocab.build(_toy(), min_images=1, max_labels=3).labels == ("cat", "dog", "car")


def test_image_labels_are_the_union_of_its_captions() -> None:
    v = KeywordVocab.build(_toy(), min_images=1)
    assert v.labels_of_text("Two dogs play.") == ["dog"]
    assert v.labels_of_image(["Two dogs play.", "A dog and a cat."]) == ["cat", "dog"]
    assert v.labels_of_text("a zebra") == []
    y = v.multi_hot(_toy())
    assert y.shape == (4, len(v)) and y.dtype == np.float32
    assert y[0, v.labels.index("cat")] == 1 and y[0, v.labels.index("car")] == 0
    assert y.sum(axis=0).tolist() == list(v.counts)


def test_save_load_round_trip(tmp_path: Path) -> None:
    v = KeywordVocab.build(_toy(), min_images=1, max_labels=4)
    p = tmp_path / "keywords.json"
    v.save(p)
    w = KeywordVocab.load(p)
    assert w == v
    assert w.labels_of_image(_toy()[2]) == v.labels_of_image(_toy()[2])
    doc = json.loads(p.read_text())
    assert doc["settings"]["min_images"] == 1 and doc["settings"]["max_labels"] == 4
    assert doc["settings"]["lemmatizer"].startswith("lemminflect")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"nowhere\.json"):
        KeywordVocab.load(tmp_path / "nowhere.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InvalidInput, match="not a JSON"):
        KeywordVocab.load(bad)
    bad.write_text(json.dumps({"labels": ["a"]}))
    with pytest.raises(InvalidInput, match="isr-keywords"):
        KeywordVocab.load(bad)
    KeywordVocab.build(_toy(), min_images=1).save(bad)
    doc = json.loads(bad.read_text())
    doc["counts"] = doc["counts"][:-1]
    bad.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match=r"bad\.json: keyword vocab: 6 labels but 5 counts"):
        KeywordVocab.load(bad)
    del doc["settings"]
    bad.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput, match="malformed"):
        KeywordVocab.load(bad)


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match="min_images"):
        KeywordVocab.build(_toy(), min_images=0)
    with pytest.raises(InvalidInput, match="max_labels"):
        KeywordVocab.build(_toy(), max_labels=0)
    with pytest.raises(InvalidInput, match="unknown word classes"):
        KeywordVocab.build(_toy(), pos=("NOUNS",))
    with pytest.raises(InvalidInput, match="got a string"):
        KeywordVocab.build(["A dog", "A cat"], min_images=1)
    with pytest.raises(InvalidInput, match="no content words"):
        KeywordVocab.build([["the of and"]], min_images=1)


@pytest.mark.skipif(not FLICKR.is_dir(), reason=f"Flickr30K captions not found at {FLICKR}")
def test_flickr30k_dev_vocabulary() -> None:
    imgs = group_captions(read_captions(FLICKR / "dev_caps.txt"))
    assert len(imgs) == 1014
    v100 = KeywordVocab.build(imgs, min_images=100)
    v10 = KeywordVocab.build(imgs, min_images=10)
    # 1,014 images carry far fewer frequent nouns than the paper's 29K (539 labels at 100)
    assert {"man", "woman", "people", "shirt"} <= set(v100.labels)
    assert 5 <= len(v100) <= 20
    assert 150 <= len(v10) <= 320
    assert {"dog", "street", "water", "ball"} <= set(v10.labels)
    assert not {"wearing", "wear", "the", "front", "image"} & set(v10.labels)
    y = v10.multi_hot(imgs)
    assert (y.sum(axis=1) > 0).mean() > 0.95  # nearly every image carries some label
