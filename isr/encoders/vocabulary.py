"""The keyword vocabulary of the pre-screening stage (Cao et al., IEEE TMM).

Entry point: :meth:`KeywordVocab.build` over the training captions, grouped per image; then
``save``/``load`` as ``keywords.json`` inside a bundle.

A label is a lemmatised content word, nouns by default ("dogs" and "dog" are one label, so are
"men" and "man"), kept when it is attached to at least ``min_images`` images. An image's labels are
the union over its captions; a text's labels are those of its paired image, which is why
:meth:`KeywordVocab.labels_of_image` and :meth:`KeywordVocab.multi_hot` take the captions of an
image. Lemmas and word classes come from lemminflect's dictionary, which ships inside its PyPI
package. It has no tagger, so the word class of an ambiguous word is read from its neighbours;
see :func:`lemmas_of_text` for the rules and their known misses.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path

import lemminflect
import numpy as np

from isr.errors import InvalidInput, NotFound

__all__ = ["KEYWORDS_FILE", "KeywordVocab", "lemmas_of_text"]

KEYWORDS_FILE = "keywords.json"
_FORMAT = "isr-keywords"
_FORMAT_VERSION = 1
_POS_CHOICES = ("NOUN", "VERB", "ADJ", "ADV")

# Function words, pronouns, numbers, the nouns captions use to place things ("in front of",
# "on top of", "in the background") and to frame them ("an image of", "a view of"): frequent in
# every caption set and useless as a filter.
_STOP_WORDS = """
    a about above across after again against all almost along also although am among an and
    another any anyone anything are around as at away be because been before behind being below
    beneath beside besides between both but by can could did do does doing done down during each
    either else enough etc even ever every everyone everything few for from further get gets
    getting got had has have having he her here hers herself him himself his how i if in inside
    into is it its itself just least less like many me might more most much must my myself near
    neither next no nobody none nor not nothing now of off on once one ones only onto or other
    others our ours ourselves out outside over own per perhaps quite rather same several she
    should so some somebody someone something somewhere such than that the their theirs them
    themselves then there these they this those though through throughout thru to together too
    toward towards under underneath until up upon us very via was we well were what whatever when
    where whether which while who whom whose why will with within without would yet you your
    yours yourself zero two three four five six seven eight nine ten eleven twelve twenty
    hundred thousand first second third lot lots kind sort bunch couple pair piece group
    front top bottom side middle back background foreground left right end edge distance
    area way thing things stuff part image scene view
    """
_STOP = frozenset(_STOP_WORDS.split())

# Determiners, possessives and numbers: a word right after one of them is a noun ("a building").
_BEFORE_NOUN_WORDS = """
    a an the this these those his her their its my our your some many several two three
    four five six seven eight nine ten another each every no all both few other
    """
_BEFORE_NOUN = frozenset(_BEFORE_NOUN_WORDS.split())

# Pronouns, auxiliaries and "to": a word right after one of them is a verb ("he runs").
_BEFORE_VERB_WORDS = """
    he she it they we who whom what that which someone everyone somebody everybody others one is
    are was were be been being am has have had does do did can could will would to
    """
_BEFORE_VERB = frozenset(_BEFORE_VERB_WORDS.split())

# Nouns used in the plural only; lemminflect folds "pants" into "pant", "shorts" into "short".
_PLURAL_ONLY_WORDS = """
    pants shorts jeans trousers glasses sunglasses goggles clothes scissors overalls leggings
    tights binoculars
    """
_PLURAL_ONLY = frozenset(_PLURAL_ONLY_WORDS.split())

_TOKEN = re.compile(r"[a-z]+(?:['\-][a-z]+)*")
_DETACHED_S = re.compile(r"\s+'s\b")


@lru_cache(maxsize=1 << 16)
def _readings(w: str) -> dict[str, tuple[str, ...]]:
    """Word class -> lemmas of one lowercase word ({} when lemminflect does not know it)."""
    return dict(lemminflect.getAllLemmas(w))


def _lemma(w: str, prev: str | None, nxt: str | None, pos: frozenset[str]) -> str | None:
    """The label a token stands for, or None when it is not a kept content word."""
    if len(w) < 2 or w in _STOP:
        return None
    if w.endswith("'s"):
        w = w[:-2]
        if len(w) < 2 or w in _STOP:
            return None
    if "'" in w:  # contractions ("don't") are function words
        return None
    if w in _PLURAL_ONLY:
        return w if "NOUN" in pos else None
    r = _readings(w)
    if not r:
        if "-" in w:  # "t-shirt", "long-haired": the head is the last part
            head, _, last = w.rpartition("-")
            lem = _lemma(last, prev, nxt, pos)
            return None if lem is None else f"{head}-{lem}"
        # Unknown words in captions are mostly names and rare nouns; typos fall under min_images.
        return lemminflect.getAllLemmasOOV(w, "NOUN")["NOUN"][0] if "NOUN" in pos else None
    cls = _word_class(w, r, prev, nxt)
    if cls not in pos:
        return None
    lem = r[cls][0]
    return None if lem in _STOP else lem


def _modifies(nxt: str | None) -> bool:
    """Whether a word before nxt reads as a modifier: nxt is a noun, adjective or participle."""
    if nxt is None or nxt in _STOP:
        return False
    nr = _readings(nxt)
    return not nr or "NOUN" in nr or "ADJ" in nr or nxt.endswith(("ed", "ing"))


def _word_class(w: str, r: dict[str, tuple[str, ...]], prev: str | None, nxt: str | None) -> str:
    """Pick one word class for an ambiguous word from its neighbours (no tagger available)."""
    if "NOUN" not in r:
        for cls in ("VERB", "ADJ", "ADV"):
            if cls in r:
                return cls
        return "OTHER"
    if "ADJ" in r and r["ADJ"][0] == w and _modifies(nxt):
        return "ADJ"  # "red shirt", "little furry cat"; but "dressed in red" is a noun
    if "VERB" in r:  # "running", "stands", "play": a noun or a verb by what comes before
        inflected = r["VERB"][0] != w
        if inflected and w.endswith(("ing", "ed")) and _modifies(nxt):
            return "VERB"  # "a dripping rancher", "a swimming pool": a modifier
        if prev is None or prev in _BEFORE_NOUN:
            return "NOUN"
        if prev in _BEFORE_VERB:
            return "VERB"
        pr = _readings(prev)
        if inflected and w.endswith("ing"):
            return "NOUN" if "ADJ" in pr else "VERB"
        if (not pr or ("NOUN" in pr and "ADJ" not in pr)) and prev not in _STOP:
            # After a noun: "dog runs", "dogs run" are verbs; "hot dog stand" is a noun.
            # Words lemminflect does not know ("t-shirt") are nouns here as everywhere.
            plural = (
                prev in _PLURAL_ONLY or prev == "people" or (bool(pr) and pr["NOUN"][0] != prev)
            )
            return "VERB" if inflected or plural else "NOUN"
        return "NOUN"
    return "NOUN"


def lemmas_of_text(text: str, pos: Sequence[str] = ("NOUN",)) -> list[str]:
    """Lemmatised content words of one text, in order of appearance, repeats kept.

    Rules, since lemminflect gives the classes a word can take but not the one it takes here:
    - stop words, numbers and placement nouns ("front", "top", "side") are dropped;
    - a word that can be a noun or a verb ("running", "stands", "play") is a noun at the start
      and after a determiner; a verb after a pronoun, an auxiliary or "to"; an "-ing" form is a
      noun only after an adjective; after a noun, "-s" forms and words after a plural are verbs;
    - a word that can be an adjective ("red", "young") is one before a noun, an adjective or a
      participle, and so is a participle ("a dripping dog", "a swimming pool");
    - unknown words are nouns; a hyphenated word takes the class of its last part.
    Known misses: "tennis balls" reads "balls" as a verb, "a man in red walks" reads "walks" as a
    noun.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"text: expected a string, got {type(text).__name__}")
    keep = frozenset(_check_pos(pos))
    text = _DETACHED_S.sub("'s", text.lower().replace("\u2019", "'"))  # "woman 's" -> "woman's"
    toks = _TOKEN.findall(text)
    out = []
    for i, w in enumerate(toks):
        prev = toks[i - 1] if i > 0 else None
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        lem = _lemma(w, prev, nxt, keep)
        if lem is not None:
            out.append(lem)
    return out


def _check_pos(pos: Sequence[str]) -> tuple[str, ...]:
    if isinstance(pos, str) or not pos:
        raise InvalidInput(f"pos: expected a non-empty list of word classes, got {pos!r}")
    bad = [p for p in pos if p not in _POS_CHOICES]
    if bad:
        raise InvalidInput(f"pos: unknown word classes {bad}; valid: {list(_POS_CHOICES)}")
    return tuple(dict.fromkeys(pos))


@dataclass(frozen=True)
class KeywordVocab:
    """Keyword labels in a stable order (most images first, then alphabetical).

    counts[i] is the number of training images labels[i] was attached to; n_images the number of
    training images; pos the word classes kept.
    """

    labels: tuple[str, ...]
    min_images: int
    counts: tuple[int, ...]
    max_labels: int | None = None
    pos: tuple[str, ...] = ("NOUN",)
    n_images: int = 0
    _col: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.counts):
            raise InvalidInput(
                f"keyword vocab: {len(self.labels)} labels but {len(self.counts)} counts"
            )
        if len(set(self.labels)) != len(self.labels):
            dup = [w for w, c in Counter(self.labels).items() if c > 1]
            raise InvalidInput(f"keyword vocab: duplicate labels {dup[:5]}")
        for w in self.labels:
            if not isinstance(w, str) or not w:
                raise InvalidInput(f"keyword vocab: label {w!r} is not a non-empty string")
        if not isinstance(self.min_images, int) or self.min_images < 1:
            raise InvalidInput(f"min_images: expected an integer >= 1, got {self.min_images!r}")
        if self.max_labels is not None and (
            not isinstance(self.max_labels, int) or self.max_labels < 1
        ):
            raise InvalidInput(
                f"max_labels: expected None or an integer >= 1, got {self.max_labels!r}"
            )
        if not isinstance(self.n_images, int) or self.n_images < 0:
            raise InvalidInput(f"n_images: expected an integer >= 0, got {self.n_images!r}")
        if not all(isinstance(c, int) and c >= 0 for c in self.counts):
            raise InvalidInput(
                f"keyword vocab: counts must be integers >= 0, got {self.counts[:5]}"
            )
        _check_pos(self.pos)
        object.__setattr__(self, "_col", {w: i for i, w in enumerate(self.labels)})

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def build(
        cls,
        captions_per_image: Sequence[Sequence[str]],
        min_images: int = 100,
        max_labels: int | None = None,
        pos: Sequence[str] = ("NOUN",),
    ) -> KeywordVocab:
        """Labels attached to at least min_images images, at most max_labels (the most frequent)."""
        if not isinstance(min_images, int) or min_images < 1:
            raise InvalidInput(f"min_images: expected an integer >= 1, got {min_images!r}")
        if max_labels is not None and (not isinstance(max_labels, int) or max_labels < 1):
            raise InvalidInput(f"max_labels: expected None or an integer >= 1, got {max_labels!r}")
        pos = _check_pos(pos)
        df: Counter[str] = Counter()  # label -> number of images
        for i, caps in enumerate(captions_per_image):
            if isinstance(caps, str):
                raise InvalidInput(
                    f"captions_per_image[{i}]: expected a list of captions, got a string"
                )
            df.update({lem for c in caps for lem in lemmas_of_text(c, pos)})
        if not df:
            raise InvalidInput("captions_per_image: no content words in any caption")
        kept = sorted((w for w, c in df.items() if c >= min_images), key=lambda w: (-df[w], w))
        if max_labels is not None:
            kept = kept[:max_labels]
        n = len(captions_per_image)
        return cls(tuple(kept), min_images, tuple(df[w] for w in kept), max_labels, pos, n)

    def labels_of_text(self, text: str) -> list[str]:
        """The vocabulary labels among one text's lemmas, in vocabulary order."""
        cols = {self._col[w] for w in lemmas_of_text(text, self.pos) if w in self._col}
        return [self.labels[j] for j in sorted(cols)]

    def labels_of_image(self, captions: Sequence[str]) -> list[str]:
        """The union of the labels of an image's captions, in vocabulary order."""
        if isinstance(captions, str):
            raise InvalidInput("captions: expected the list of an image's captions, got a string")
        cols = {
            self._col[w] for c in captions for w in lemmas_of_text(c, self.pos) if w in self._col
        }
        return [self.labels[j] for j in sorted(cols)]

    def multi_hot(self, captions_per_image: Sequence[Sequence[str]]) -> np.ndarray:
        """Training targets: y[i, j] = 1 where image i carries label j. # (N, L) float32"""
        y = np.zeros((len(captions_per_image), len(self.labels)), dtype=np.float32)
        for i, caps in enumerate(captions_per_image):
            for w in self.labels_of_image(caps):
                y[i, self._col[w]] = 1.0
        return y

    def save(self, path: Path) -> None:
        doc = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "labels": list(self.labels),
            "counts": list(self.counts),
            "settings": {
                "min_images": self.min_images,
                "max_labels": self.max_labels,
                "pos": list(self.pos),
                "n_images": self.n_images,
                "lemmatizer": f"lemminflect {version('lemminflect')}",
            },
        }
        Path(path).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> KeywordVocab:
        path = Path(path)
        if not path.is_file():
            raise NotFound(f"keyword vocabulary not found: {path}")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInput(f"{path}: not a JSON keyword vocabulary ({e})") from e
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise InvalidInput(f'{path}: not an {_FORMAT} file (no "format": "{_FORMAT}")')
        if doc.get("version") != _FORMAT_VERSION:
            raise InvalidInput(
                f"{path}: {_FORMAT} version {doc.get('version')!r}; this isr reads version "
                f"{_FORMAT_VERSION}"
            )
        try:
            s = doc["settings"]
            labels, counts = doc["labels"], doc["counts"]
            if not isinstance(labels, list) or not isinstance(counts, list):
                raise TypeError("labels and counts must be lists")
            return cls(
                labels=tuple(labels),
                min_images=s["min_images"],
                counts=tuple(counts),
                max_labels=s["max_labels"],
                pos=tuple(s["pos"]),
                n_images=s["n_images"],
            )
        except (KeyError, TypeError) as e:
            raise InvalidInput(f"{path}: malformed {_FORMAT} file ({e!r})") from e
        except InvalidInput as e:
            raise InvalidInput(f"{path}: {e}") from e
