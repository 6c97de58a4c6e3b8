"""A seeded synthetic world of scenes, region features and captions, in the SCAN precomp layout.

Entry point: :func:`generate_world` (the ``isr world`` command calls it). It writes, per split,
``{split}_ims.npy`` (N, m, D) float32 and ``{split}_caps.txt`` (five captions per image, image i
owns lines 5i..5i+4) so that :class:`isr.ingest.precomp.PrecompSplit` reads it like a real set,
plus ``{split}_objects.npy`` (the true scene contents), ``{split}_dup_of.npy`` (near-duplicate
sources) and ``world.json`` (seed, sizes, vocabulary, generator version). docs/synthetic_world.md
describes the model of the world; this module is its only implementation.

Output is a pure function of the arguments: the world is generated in fixed chunks of
``_CHUNK`` images, each with its own seed, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from isr.errors import Conflict, InvalidInput

__all__ = [
    "ATTRIBUTES",
    "GENERATOR_VERSION",
    "OBJECTS",
    "RELATIONS",
    "WorldInfo",
    "generate_world",
    "plural",
]

GENERATOR_VERSION = 1
_CHUNK = 256  # images per seeded chunk; part of the generator's definition (changing it = v2)
_N_BACKGROUND = 48  # clutter prototypes ("sky", "wall", "blur"...), never named in captions
_MAX_OBJECTS = 5

# ---------------------------------------------------------------------------------------------
# Vocabulary. Each object: (label, category, words used for it in captions). The label is one of
# the words; other words are synonyms, and some words are shared between objects ("kid" is a boy,
# a girl, a child or a goat; "bike" a bicycle or a motorcycle; "board" three kinds of board).
# ---------------------------------------------------------------------------------------------

OBJECTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("dog", "animal", ("dog", "puppy", "hound", "pup")),
    ("cat", "animal", ("cat", "kitten", "kitty")),
    ("horse", "animal", ("horse", "pony", "stallion")),
    ("cow", "animal", ("cow", "heifer", "calf")),
    ("sheep", "animal", ("sheep", "lamb", "ewe")),
    ("bird", "animal", ("bird", "songbird", "birdie")),
    ("duck", "animal", ("duck", "duckling")),
    ("chicken", "animal", ("chicken", "hen", "rooster")),
    ("pig", "animal", ("pig", "hog", "piglet")),
    ("goat", "animal", ("goat", "kid")),
    ("rabbit", "animal", ("rabbit", "bunny", "hare")),
    ("elephant", "animal", ("elephant",)),
    ("giraffe", "animal", ("giraffe",)),
    ("bear", "animal", ("bear", "cub")),
    ("zebra", "animal", ("zebra",)),
    ("lion", "animal", ("lion", "lioness")),
    ("monkey", "animal", ("monkey", "ape", "chimp")),
    ("camel", "animal", ("camel", "dromedary")),
    ("deer", "animal", ("deer", "fawn", "stag")),
    ("squirrel", "animal", ("squirrel", "chipmunk")),
    ("man", "person", ("man", "guy", "gentleman", "fellow")),
    ("woman", "person", ("woman", "lady", "gal")),
    ("boy", "person", ("boy", "kid", "lad")),
    ("girl", "person", ("girl", "kid", "lass")),
    ("child", "person", ("child", "kid", "youngster")),
    ("baby", "person", ("baby", "infant", "toddler")),
    ("player", "person", ("player", "athlete", "sportsman")),
    ("worker", "person", ("worker", "laborer", "workman")),
    ("chef", "person", ("chef", "cook")),
    ("officer", "person", ("officer", "policeman", "cop")),
    ("student", "person", ("student", "pupil")),
    ("musician", "person", ("musician", "performer")),
    ("tourist", "person", ("tourist", "traveler", "visitor")),
    ("farmer", "person", ("farmer", "rancher")),
    ("soldier", "person", ("soldier", "trooper")),
    ("car", "vehicle", ("car", "automobile", "sedan")),
    ("truck", "vehicle", ("truck", "lorry", "pickup")),
    ("bus", "vehicle", ("bus", "coach")),
    ("bicycle", "vehicle", ("bicycle", "bike", "cycle")),
    ("motorcycle", "vehicle", ("motorcycle", "motorbike", "bike")),
    ("boat", "vehicle", ("boat", "ship", "vessel")),
    ("canoe", "vehicle", ("canoe", "kayak")),
    ("train", "vehicle", ("train", "locomotive")),
    ("airplane", "vehicle", ("airplane", "plane", "jet")),
    ("helicopter", "vehicle", ("helicopter", "chopper")),
    ("scooter", "vehicle", ("scooter", "moped")),
    ("van", "vehicle", ("van", "minivan")),
    ("tractor", "vehicle", ("tractor",)),
    ("taxi", "vehicle", ("taxi", "cab")),
    ("wagon", "vehicle", ("wagon", "cart")),
    ("apple", "food", ("apple",)),
    ("banana", "food", ("banana",)),
    ("orange", "food", ("orange", "tangerine")),
    ("pizza", "food", ("pizza", "pie")),
    ("sandwich", "food", ("sandwich", "sub")),
    ("hamburger", "food", ("hamburger", "burger", "cheeseburger")),
    ("cake", "food", ("cake", "cupcake")),
    ("donut", "food", ("donut", "doughnut")),
    ("carrot", "food", ("carrot",)),
    ("cookie", "food", ("cookie", "biscuit")),
    ("bagel", "food", ("bagel", "roll")),
    ("egg", "food", ("egg",)),
    ("tomato", "food", ("tomato",)),
    ("lemon", "food", ("lemon", "lime")),
    ("strawberry", "food", ("strawberry", "berry")),
    ("watermelon", "food", ("watermelon", "melon")),
    ("taco", "food", ("taco", "burrito")),
    ("pretzel", "food", ("pretzel",)),
    ("chair", "furniture", ("chair", "seat")),
    ("table", "furniture", ("table",)),
    ("sofa", "furniture", ("sofa", "couch", "settee")),
    ("bed", "furniture", ("bed", "cot")),
    ("bench", "furniture", ("bench", "pew")),
    ("desk", "furniture", ("desk", "workstation")),
    ("lamp", "furniture", ("lamp", "lantern")),
    ("shelf", "furniture", ("shelf", "bookshelf")),
    ("cabinet", "furniture", ("cabinet", "cupboard", "dresser")),
    ("stool", "furniture", ("stool",)),
    ("wardrobe", "furniture", ("wardrobe", "closet")),
    ("armchair", "furniture", ("armchair", "recliner", "seat")),
    ("mirror", "furniture", ("mirror",)),
    ("rug", "furniture", ("rug", "carpet", "mat")),
    ("clock", "furniture", ("clock",)),
    ("ball", "sport", ("ball",)),
    ("football", "sport", ("football",)),
    ("basketball", "sport", ("basketball",)),
    ("baseball", "sport", ("baseball",)),
    ("bat", "sport", ("bat",)),
    ("racket", "sport", ("racket", "racquet")),
    ("frisbee", "sport", ("frisbee", "disc")),
    ("skateboard", "sport", ("skateboard", "board")),
    ("surfboard", "sport", ("surfboard", "board")),
    ("ski", "sport", ("ski",)),
    ("snowboard", "sport", ("snowboard", "board")),
    ("kite", "sport", ("kite",)),
    ("puck", "sport", ("puck",)),
    ("dumbbell", "sport", ("dumbbell", "weight")),
    ("paddle", "sport", ("paddle", "oar")),
    ("shirt", "clothing", ("shirt", "top", "blouse")),
    ("jacket", "clothing", ("jacket", "windbreaker")),
    ("coat", "clothing", ("coat", "overcoat", "parka")),
    ("hat", "clothing", ("hat", "cap")),
    ("dress", "clothing", ("dress", "gown")),
    ("skirt", "clothing", ("skirt",)),
    ("sweater", "clothing", ("sweater", "jumper", "pullover")),
    ("scarf", "clothing", ("scarf",)),
    ("helmet", "clothing", ("helmet",)),
    ("uniform", "clothing", ("uniform", "outfit")),
    ("vest", "clothing", ("vest",)),
    ("tie", "clothing", ("tie", "necktie")),
    ("boot", "clothing", ("boot",)),
    ("glove", "clothing", ("glove", "mitten")),
    ("hoodie", "clothing", ("hoodie", "sweatshirt")),
    ("cup", "item", ("cup", "mug")),
    ("bottle", "item", ("bottle", "flask")),
    ("bag", "item", ("bag", "handbag", "purse")),
    ("umbrella", "item", ("umbrella", "parasol")),
    ("book", "item", ("book", "novel")),
    ("phone", "item", ("phone", "cellphone", "smartphone")),
    ("camera", "item", ("camera",)),
    ("laptop", "item", ("laptop", "computer", "notebook")),
    ("guitar", "item", ("guitar",)),
    ("box", "item", ("box", "crate", "carton")),
    ("basket", "item", ("basket",)),
    ("bucket", "item", ("bucket", "pail")),
    ("balloon", "item", ("balloon",)),
    ("flag", "item", ("flag", "banner")),
    ("backpack", "item", ("backpack", "rucksack", "bag")),
    ("newspaper", "item", ("newspaper", "paper")),
    ("suitcase", "item", ("suitcase", "bag")),
    ("microphone", "item", ("microphone", "mic")),
    ("vase", "item", ("vase", "pot")),
    ("drum", "item", ("drum",)),
    ("beach", "place", ("beach", "shore", "seaside")),
    ("park", "place", ("park", "garden")),
    ("street", "place", ("street", "road", "avenue")),
    ("kitchen", "place", ("kitchen",)),
    ("field", "place", ("field", "meadow", "pasture")),
    ("forest", "place", ("forest", "woodland")),
    ("mountain", "place", ("mountain", "hillside")),
    ("lake", "place", ("lake", "pond")),
    ("river", "place", ("river", "stream", "creek")),
    ("city", "place", ("city", "town")),
    ("stadium", "place", ("stadium", "arena")),
    ("restaurant", "place", ("restaurant", "diner", "cafe")),
    ("office", "place", ("office",)),
    ("classroom", "place", ("classroom",)),
    ("market", "place", ("market", "bazaar")),
    ("farm", "place", ("farm", "ranch")),
    ("playground", "place", ("playground",)),
    ("station", "place", ("station", "platform")),
)

_PLACE_PREP: dict[str, tuple[str, ...]] = {
    "beach": ("on", "at"), "park": ("in", "at"), "street": ("on", "in", "down"),
    "kitchen": ("in",), "field": ("in", "across"), "forest": ("in", "through"),
    "mountain": ("on", "up"), "lake": ("by", "at", "near"), "river": ("by", "near", "along"),
    "city": ("in",), "stadium": ("at", "in"), "restaurant": ("in", "at"), "office": ("in",),
    "classroom": ("in",), "market": ("at", "in"), "farm": ("on", "at"),
    "playground": ("at", "on"), "station": ("at", "on"),
}  # fmt: skip

# Attributes: (label, kind, words, categories it applies to). Kinds fix the adjective order.
_KIND_ORDER = ("size", "age", "state", "colour", "pattern", "material")
_COLOURABLE = ("vehicle", "furniture", "sport", "clothing", "item")
ATTRIBUTES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("red", "colour", ("red", "crimson", "scarlet"), _COLOURABLE),
    ("blue", "colour", ("blue", "navy"), _COLOURABLE),
    ("green", "colour", ("green",), _COLOURABLE),
    ("yellow", "colour", ("yellow", "golden"), (*_COLOURABLE, "animal")),
    ("black", "colour", ("black", "dark"), (*_COLOURABLE, "animal")),
    ("white", "colour", ("white",), (*_COLOURABLE, "animal")),
    ("brown", "colour", ("brown", "tan"), (*_COLOURABLE, "animal")),
    ("orange", "colour", ("orange",), _COLOURABLE),
    ("purple", "colour", ("purple", "violet"), _COLOURABLE),
    ("pink", "colour", ("pink",), _COLOURABLE),
    ("grey", "colour", ("grey", "gray"), (*_COLOURABLE, "animal")),
    ("big", "size", ("big", "large", "huge"), ("animal", "vehicle", "food", "furniture", "item")),
    ("small", "size", ("small", "little", "tiny"), ("animal", "vehicle", "food", "furniture")),
    ("young", "age", ("young", "little"), ("animal", "person")),
    ("old", "age", ("old", "aged", "elderly"), ("animal", "person")),
    ("new", "state", ("new", "shiny"), ("vehicle", "sport", "item", "furniture")),
    ("worn", "state", ("worn", "battered", "shabby"), ("vehicle", "sport", "item", "furniture")),
    ("tall", "state", ("tall",), ("person",)),
    ("happy", "state", ("happy", "smiling", "cheerful"), ("person",)),
    ("tired", "state", ("tired", "sleepy", "weary"), ("person", "animal")),
    ("fluffy", "state", ("fluffy", "furry"), ("animal",)),
    ("wet", "state", ("wet", "soaked", "dripping"), ("animal", "person")),
    ("fresh", "state", ("fresh",), ("food",)),
    ("sliced", "state", ("sliced", "cut"), ("food",)),
    ("ripe", "state", ("ripe",), ("food",)),
    ("busy", "state", ("busy", "crowded", "bustling"), ("place",)),
    ("quiet", "state", ("quiet", "empty", "deserted"), ("place",)),
    ("sunny", "state", ("sunny", "bright"), ("place",)),
    ("snowy", "state", ("snowy", "frozen"), ("place",)),
    ("striped", "pattern", ("striped",), ("clothing", "furniture")),
    ("spotted", "pattern", ("spotted", "dotted"), ("clothing", "animal")),
    ("plaid", "pattern", ("plaid", "checkered", "tartan"), ("clothing", "furniture")),
    ("wooden", "material", ("wooden", "wood"), ("furniture", "sport", "item", "vehicle")),
    ("metal", "material", ("metal", "metallic", "steel"), ("furniture", "item", "vehicle")),
    ("plastic", "material", ("plastic",), ("furniture", "sport", "item")),
    ("leather", "material", ("leather",), ("furniture", "clothing", "sport", "item")),
    ("woolen", "material", ("woolen", "wool", "knitted"), ("clothing",)),
)

_ANY = ("animal", "person", "vehicle", "food", "furniture", "sport", "item")
_RIDEABLE: tuple[str, ...] = ("horse", "elephant", "camel", "bicycle", "motorcycle", "scooter")
_RIDEABLE += ("skateboard", "surfboard", "snowboard", "canoe", "boat", "wagon", "tractor")
_RIDEABLE += ("bus", "train")
_PUSHABLE: tuple[str, ...] = ("bicycle", "motorcycle", "scooter", "wagon", "car", "chair", "stool")
_PUSHABLE += ("box", "table", "suitcase")
# Relations: (label, words, subject categories, object categories or object labels). Object
# lists name labels where a category would be too broad (one rides a horse, not a giraffe).
RELATIONS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    ("holding", ("holding", "carrying", "clutching"), ("person",), ("food", "sport", "item")),
    ("riding", ("riding", "riding on", "sitting astride"), ("person",), _RIDEABLE),
    ("wearing", ("wearing", "dressed in", "sporting"), ("person",), ("clothing",)),
    ("eating", ("eating", "munching on", "biting into"), ("person", "animal"), ("food",)),
    ("on", ("on", "on top of", "atop"), ("animal", "food", "item", "sport"),
     ("furniture", "vehicle")),
    ("sitting on", ("sitting on", "seated on", "perched on"), ("person", "animal"),
     ("furniture",)),
    ("under", ("under", "beneath", "underneath"), ("animal", "item", "sport", "person", "food"),
     ("furniture", "vehicle")),
    ("next to", ("next to", "beside", "alongside", "by"), _ANY, _ANY),
    ("in front of", ("in front of",), _ANY, _ANY),
    ("behind", ("behind", "in back of"), _ANY, _ANY),
    ("playing with", ("playing with", "toying with"), ("person", "animal"),
     ("sport", "animal", "balloon", "drum", "guitar", "box")),
    ("chasing", ("chasing", "running after", "pursuing"), ("person", "animal"),
     ("animal", "ball", "football", "frisbee", "balloon", "kite", "car", "bus", "bicycle")),
    ("looking at", ("looking at", "watching", "staring at", "gazing at"), ("person", "animal"),
     _ANY),
    ("throwing", ("throwing", "tossing"), ("person",), ("sport", "food", "balloon")),
    ("pushing", ("pushing", "shoving"), ("person",), _PUSHABLE),
    ("feeding", ("feeding",), ("person",), ("animal",)),
)  # fmt: skip

_IRREGULAR = {
    "man": "men", "woman": "women", "gentleman": "gentlemen", "workman": "workmen",
    "policeman": "policemen", "sportsman": "sportsmen", "child": "children", "sheep": "sheep",
    "deer": "deer", "shelf": "shelves", "bookshelf": "bookshelves", "scarf": "scarves",
    "calf": "calves", "tomato": "tomatoes", "lioness": "lionesses", "fish": "fish",
}  # fmt: skip
_A_BEFORE_VOWEL = frozenset({"uniform", "european", "unicycle", "useful", "used"})
_NUMBERS = ("two", "three", "four")


def plural(noun: str) -> str:
    """English plural of one of the world's nouns (the last word of a phrase)."""
    head, sep, w = noun.rpartition(" ")
    if w in _IRREGULAR:
        p = _IRREGULAR[w]
    elif w.endswith(("s", "x", "z", "ch", "sh")):
        p = w + "es"
    elif w.endswith("y") and w[-2:-1] not in ("a", "e", "i", "o", "u"):
        p = w[:-1] + "ies"
    else:
        p = w + "s"
    return head + sep + p


def _article(phrase: str) -> str:
    first = phrase.partition(" ")[0]
    return "an" if first[0] in "aeiou" and first not in _A_BEFORE_VOWEL else "a"


# ---------------------------------------------------------------------------------------------
# Scenes. Generation is plain Python over one seeded random.Random per chunk; the hot paths read
# precomputed tuples because a 100,000-image world runs them half a million times.
# ---------------------------------------------------------------------------------------------

# A scene object is (object id, count, attribute ids in adjective order); a scene is
# (objects, relations (subject position, relation id, object position), place id or -1,
# place attribute id or -1).
_Obj = tuple[int, int, tuple[int, ...]]
_Scene = tuple[tuple[_Obj, ...], tuple[tuple[int, int, int], ...], int, int]


class _Tables:
    """Index tables over the vocabulary, built once per call (they are cheap)."""

    def __init__(self, paraphrase: float = 1.0) -> None:
        # The share of word choices drawn from all synonyms (else the first, canonical word);
        # 1.0 draws no extra number, so worlds of the default are those of version 1.
        self.paraphrase = paraphrase
        cats = [c for _, c, _ in OBJECTS]
        self.cat = cats
        self.by_cat: dict[str, tuple[int, ...]] = {}
        for i, c in enumerate(cats):
            self.by_cat[c] = (*self.by_cat.get(c, ()), i)
        self.places = self.by_cat["place"]
        self.things = tuple(i for i, c in enumerate(cats) if c not in ("place", "clothing"))
        self.person = tuple(c == "person" for c in cats)
        self.clothing = tuple(c == "clothing" for c in cats)
        self.words = tuple(w for _, _, w in OBJECTS)
        self.plurals = tuple(tuple(plural(x) for x in w) for _, _, w in OBJECTS)
        self.awords = tuple(w for _, _, w, _ in ATTRIBUTES)
        self.rwords = tuple(w for _, w, _, _ in RELATIONS)
        self.preps = {i: _PLACE_PREP[OBJECTS[i][0]] for i in self.places}
        # object -> attribute ids grouped by kind, kinds in adjective order
        self.kinds: list[tuple[tuple[int, ...], ...]] = []
        for c in cats:
            self.kinds.append(tuple(
                g for g in (
                    tuple(a for a, (_, k, _, cs) in enumerate(ATTRIBUTES) if k == kind and c in cs)
                    for kind in _KIND_ORDER
                ) if g
            ))  # fmt: skip
        label = {lab: i for i, (lab, _, _) in enumerate(OBJECTS)}
        self.subj: list[frozenset[int]] = []
        self.obj: list[frozenset[int]] = []
        for _, _, sc, oc in RELATIONS:
            self.subj.append(frozenset(i for i, c in enumerate(cats) if c in sc))
            self.obj.append(
                frozenset(i for i, c in enumerate(cats) if c in oc)
                | frozenset(label[w] for w in oc if w in label)
            )
        self.wearing = [lab for lab, *_ in RELATIONS].index("wearing")
        self._pairs: dict[tuple[int, int], tuple[int, ...]] = {}

    def relations(self, s: int, o: int) -> tuple[int, ...]:
        """Relation ids with object s as subject and object o as object."""
        rs = self._pairs.get((s, o))
        if rs is None:
            rs = tuple(r for r in range(len(RELATIONS)) if s in self.subj[r] and o in self.obj[r])
            self._pairs[(s, o)] = rs
        return rs


def _word(rnd: random.Random, tb: _Tables, n: int) -> int:
    """The index of one of n synonyms: uniform, or (with probability 1 - paraphrase) 0."""
    k = int(rnd.random() * n)
    if tb.paraphrase < 1.0 and rnd.random() >= tb.paraphrase:
        return 0
    return k


def _pick(rnd: random.Random, seq: tuple[int, ...] | list[int]) -> int:
    # random.choice's algorithm is an implementation detail of CPython; this one is pinned.
    return seq[int(rnd.random() * len(seq))]


def _attrs(rnd: random.Random, tb: _Tables, o: int) -> tuple[int, ...]:
    """0-2 attributes of different kinds, in adjective order."""
    kinds = tb.kinds[o]
    q = rnd.random()
    if not kinds or q < 0.17:
        return ()
    if q < 0.67 or len(kinds) == 1:
        g = kinds[int(rnd.random() * len(kinds))]
        return (g[int(rnd.random() * len(g))],)
    i = int(rnd.random() * len(kinds))
    j = (i + 1 + int(rnd.random() * (len(kinds) - 1))) % len(kinds)
    gi, gj = kinds[min(i, j)], kinds[max(i, j)]
    return (gi[int(rnd.random() * len(gi))], gj[int(rnd.random() * len(gj))])


def _new_scene(rnd: random.Random, tb: _Tables) -> _Scene:
    r = rnd.random
    n = (2, 3, 3, 4, 4, 5)[int(r() * 6)]
    place, place_attr = -1, -1
    if r() < 0.75:
        place = _pick(rnd, tb.places)
        if r() < 0.3:
            place_attr = _pick(rnd, tb.kinds[place][0])
    q = r()
    first = _pick(rnd, tb.by_cat["person"] if q < 0.4 else tb.by_cat["animal"] if q < 0.8
                  else tb.things)  # fmt: skip
    objs = [first]
    anchors = [0]  # positions that may take a relation (not clothing)
    wearers = [0] if tb.person[first] else []
    rels: list[tuple[int, int, int]] = []
    while len(objs) < n:
        q = r()
        if q < 0.17 and wearers:
            o = _pick(rnd, tb.by_cat["clothing"])
        else:
            o = _pick(rnd, tb.by_cat["person"] if q < 0.34 else tb.by_cat["animal"] if q < 0.5
                      else tb.things)  # fmt: skip
        if o in objs:
            continue
        k = len(objs)
        if tb.clothing[o]:
            rels.append((_pick(rnd, wearers), tb.wearing, k))
        else:
            j = _pick(rnd, anchors)
            fwd, bwd = tb.relations(o, objs[j]), tb.relations(objs[j], o)
            assert fwd and bwd, "'next to' relates any two things"
            if r() < 0.5:
                rels.append((k, _pick(rnd, fwd), j))
            else:
                rels.append((j, _pick(rnd, bwd), k))
            anchors.append(k)
            if tb.person[o]:
                wearers.append(k)
        objs.append(o)
    out = tuple(
        (o, 1 if tb.clothing[o] or r() < 0.8 else (2, 2, 3)[int(r() * 3)], _attrs(rnd, tb, o))
        for o in objs
    )
    return out, tuple(rels), place, place_attr


def _near_duplicate(rnd: random.Random, tb: _Tables, src: _Scene) -> _Scene:
    """A copy of src with one thing changed: an attribute, an object, a role swap or the place."""
    objs, rels, place, place_attr = src
    for _ in range(8):
        how = ("attr", "attr", "object", "swap", "place")[int(rnd.random() * 5)]
        if how == "attr":
            k = int(rnd.random() * len(objs))
            o, count, attrs = objs[k]
            new = _attrs(rnd, tb, o)
            if new and new != attrs:
                return (*objs[:k], (o, count, new), *objs[k + 1 :]), rels, place, place_attr
        elif how == "object":
            k = int(rnd.random() * len(objs))
            o = _pick(rnd, tb.by_cat[tb.cat[objs[k][0]]])
            fits = all(
                (a != k or o in tb.subj[r]) and (b != k or o in tb.obj[r]) for a, r, b in rels
            )
            if fits and o not in [x[0] for x in objs]:
                x = (o, objs[k][1], _attrs(rnd, tb, o))
                return (*objs[:k], x, *objs[k + 1 :]), rels, place, place_attr
        elif how == "swap":
            i = int(rnd.random() * len(rels))
            a, r, b = rels[i]
            if objs[a][0] in tb.obj[r] and objs[b][0] in tb.subj[r]:
                return objs, (*rels[:i], (b, r, a), *rels[i + 1 :]), place, place_attr
        else:
            p = _pick(rnd, tb.places)
            if p != place:
                return objs, rels, p, -1
    return src  # nothing applicable: a repeat of the scene with fresh region noise


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------


def _np(rnd: random.Random, tb: _Tables, x: _Obj) -> str:
    """A noun phrase for one scene object: "a fluffy brown puppy", "two old men"."""
    r = rnd.random
    o, count, attrs = x
    ws = tb.words[o]
    k = _word(rnd, tb, len(ws))
    adjs = [tb.awords[a][_word(rnd, tb, len(tb.awords[a]))] for a in attrs if r() < 0.55]
    if count > 1:
        q = r()
        det = ("" if q < 0.3 else "some " if q < 0.4 else "several " if q < 0.5 and count > 2
               else _NUMBERS[count - 2] + " ")  # fmt: skip
        return det + " ".join((*adjs, tb.plurals[o][k]))
    head = " ".join((*adjs, ws[k])) if adjs else ws[k]
    return ("the " if r() < 0.15 else _article(head) + " ") + head


def _place_phrase(rnd: random.Random, tb: _Tables, s: _Scene) -> str:
    r = rnd.random
    place, place_attr = s[2], s[3]
    preps, ws = tb.preps[place], tb.words[place]
    noun = ws[_word(rnd, tb, len(ws))]
    if place_attr >= 0 and r() < 0.6:
        aws = tb.awords[place_attr]
        noun = aws[_word(rnd, tb, len(aws))] + " " + noun
    det = "the" if r() < 0.6 else _article(noun)
    return f"{preps[int(r() * len(preps))]} {det} {noun}"


def _rel_clause(rnd: random.Random, tb: _Tables, s: _Scene, rel: tuple[int, int, int],
                finite: bool) -> str:  # fmt: skip
    a, r, b = rel
    subj = s[0][a]
    ws = tb.rwords[r]
    verb = ws[_word(rnd, tb, len(ws))]
    if finite:
        verb = ("are " if subj[1] > 1 else "is ") + verb
    return f"{_np(rnd, tb, subj)} {verb} {_np(rnd, tb, s[0][b])}"


def _caption(rnd: random.Random, tb: _Tables, s: _Scene) -> str:
    """One caption: a relation, two relations, a list of things, or a place with a thing."""
    r = rnd.random
    objs, rels, place, _ = s
    q = r()
    where = " " + _place_phrase(rnd, tb, s) if place >= 0 and r() < 0.6 else ""
    if q < 0.45 and rels:
        rel = rels[int(r() * len(rels))]
        p = r()
        if p < 0.12:
            body = "there are " if objs[rel[0]][1] > 1 else "there is "
        elif p < 0.22:
            body = ("a photo of ", "a picture of ", "an image of ")[int(r() * 3)]
        else:
            body = ""
        body += _rel_clause(rnd, tb, s, rel, not body and r() < 0.35) + where
    elif q < 0.6 and len(rels) >= 2:
        i = int(r() * len(rels))
        j = (i + 1 + int(r() * (len(rels) - 1))) % len(rels)
        join = (" while ", " and ", ", ", " as ")[int(r() * 4)]
        body = (_rel_clause(rnd, tb, s, rels[i], r() < 0.5) + join
                + _rel_clause(rnd, tb, s, rels[j], True) + where)  # fmt: skip
    elif q < 0.8:
        k = min(len(objs), (2, 2, 3)[int(r() * 3)])
        i = int(r() * len(objs))
        nps = [_np(rnd, tb, objs[(i + t) % len(objs)]) for t in range(k)]
        if r() < 0.5:
            nps.reverse()
        body = ", ".join(nps[:-1]) + " and " + nps[-1] + where
        if r() < 0.3:
            body = ("a scene with ", "a view of ", "there are ")[int(r() * 3)] + body
    elif place >= 0:
        x = objs[int(r() * len(objs))]
        if r() < 0.5:
            ws = tb.words[place]
            noun = ws[_word(rnd, tb, len(ws))]
            body = f"{_article(noun)} {noun} with {_np(rnd, tb, x)}"
        else:
            body = f"{_np(rnd, tb, x)} {_place_phrase(rnd, tb, s)}"
    else:
        x = objs[int(r() * len(objs))]
        body = ("a close-up of ", "", "just ")[int(r() * 3)] + _np(rnd, tb, x)
    end = r()
    return body[0].upper() + body[1:] + (" ." if end < 0.2 else "" if end < 0.3 else ".")


# ---------------------------------------------------------------------------------------------
# Region features
# ---------------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _prototypes(seed: int, D: int) -> tuple[np.ndarray, np.ndarray]:
    """T1: (object x (none + attribute)) rows, then background rows; T2: (object x relation).

    A region is T1[row] (+ T2[row] for a relation region) + noise. Objects of one category share
    a centroid (cosine ~0.36 between them) so near misses are near in feature space too.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 7, D])))
    cats = sorted({c for _, c, _ in OBJECTS})
    cen = _unit(rng.standard_normal((len(cats), D)))
    ci = np.array([cats.index(c) for _, c, _ in OBJECTS])
    p_obj = _unit(0.6 * cen[ci] + 0.8 * _unit(rng.standard_normal((len(OBJECTS), D))))
    kinds = sorted({k for _, k, _, _ in ATTRIBUTES})
    kcen = _unit(rng.standard_normal((len(kinds), D)))
    ki = np.array([kinds.index(k) for _, k, _, _ in ATTRIBUTES])
    p_att = _unit(0.5 * kcen[ki] + 0.87 * _unit(rng.standard_normal((len(ATTRIBUTES), D))))
    p_rel = _unit(rng.standard_normal((len(RELATIONS), D)))
    p_bg = _unit(rng.standard_normal((_N_BACKGROUND, D)))
    n_o, n_a = len(OBJECTS), len(ATTRIBUTES)
    t1 = np.empty((n_o, n_a + 1, D))
    t1[:, 0] = p_obj
    t1[:, 1:] = p_obj[:, None, :] + 0.6 * p_att[None, :, :]
    t1 = np.concatenate([t1.reshape(n_o * (n_a + 1), D), p_bg])
    t2 = 0.7 * p_obj[:, None, :] + 0.7 * p_rel[None, :, :]
    return t1.astype(np.float32), t2.reshape(n_o * len(RELATIONS), D).astype(np.float32)


def _regions(rnd: random.Random, s: _Scene, budget: int) -> tuple[list[int], list[int]]:
    """The scene's non-clutter regions as (T1 row, T2 row or -1), most important first."""
    r = rnd.random
    na1, nr = len(ATTRIBUTES) + 1, len(RELATIONS)
    objs, rels, place, place_attr = s
    # An object's regions show it with one of its attributes (80%) or plain.
    rows = [o * na1 + (a[int(r() * len(a))] + 1 if a and r() < 0.8 else 0) for o, _, a in objs]
    r1 = rows[:]  # one region per object first
    r1 += [rows[a] for a, _, _ in rels]  # one per relation: the pair's union box
    r2 = [-1] * len(objs) + [objs[b][0] * nr + rel for _, rel, b in rels]
    if place >= 0:
        pa = place * na1 + (place_attr + 1 if place_attr >= 0 else 0)
        r1 += (pa, place * na1) * (1 + int(r() * 2))
    for k, (o, count, a) in enumerate(objs):  # more boxes per instance: parts, crops, overlaps
        extra = count * (1 + int(r() * 3)) - 1
        r1 += [rows[k] if not a or r() < 0.5 else o * na1] * extra
    r1 = r1[:budget]
    return r1, r2[: len(r1)] + [-1] * (len(r1) - len(r2))


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

_SPLITS = ("train", "dev", "test")
_UNIFORM_STD = math.sqrt((256**2 - 1) / 12)  # std of integers uniform on [-128, 127]


@dataclass(frozen=True)
class WorldInfo:
    """What generate_world wrote."""

    out_dir: Path
    sizes: dict[str, int]
    m: int
    D: int
    n_bytes: int


def _check(name: str, v: object, lo: float, hi: float = math.inf) -> None:
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi):
        rng = f">= {lo}" if hi == math.inf else f"in [{lo}, {hi}]"
        raise InvalidInput(f"{name}: expected a number {rng}, got {v!r}")


def generate_world(
    out_dir: Path,
    n_train: int,
    n_dev: int,
    n_test: int,
    seed: int = 0,
    m: int = 32,
    D: int = 256,
    noise: float = 1.0,
    near_duplicates: float = 0.03,
    overwrite: bool = False,
    paraphrase: float = 1.0,
) -> WorldInfo:
    """Write a synthetic world of n_train + n_dev + n_test images into out_dir.

    m regions of D dims per image; ``noise`` is the norm of a region's noise relative to a unit
    prototype; ``near_duplicates`` the share of images that copy an earlier scene of the same
    chunk with one change; ``paraphrase`` the share of words (object, attribute, relation and
    place words) drawn from all their synonyms rather than the first one: 1.0 (the default)
    draws every synonym alike, 0.0 names each thing by one word (the easiest captions).
    Splits of 0 images are not written. Disk: 4*m*D bytes per image
    (100,000 images: 3.3 GB at the default m=32, D=256, written in about 30 s on the project's
    2-core machine; 7.4 GB and about 40 s at SCAN's m=36, D=512; 0.41 GB at m=16, D=64).
    Raises InvalidInput on bad arguments or too little disk, Conflict if out_dir holds a world.
    """
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    for k, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidInput(f"n_{k}: expected an integer >= 0, got {n!r}")
    if sum(sizes.values()) < 1:
        raise InvalidInput("the world needs at least one image (n_train + n_dev + n_test >= 1)")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InvalidInput(f"seed: expected an integer >= 0, got {seed!r}")
    for name, v, lo in (("m", m, 8), ("D", D, 8)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise InvalidInput(f"{name}: expected an integer >= {lo}, got {v!r}")
    _check("noise", noise, 0.0)
    _check("near_duplicates", near_duplicates, 0.0, 0.5)
    _check("paraphrase", paraphrase, 0.0, 1.0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ["world.json"] + [
        f"{sp}_{x}" for sp in _SPLITS for x in ("ims.npy", "caps.txt", "objects.npy", "dup_of.npy")
    ]
    existing = [name for name in names if (out_dir / name).exists()]
    if existing and not overwrite:
        raise Conflict(
            f"{out_dir} already holds {existing[:3]}; replace it with --overwrite (overwrite=True from Python)"
        )
    need = sum(n * (m * D * 4 + 400) for n in sizes.values())  # features + captions
    free = shutil.disk_usage(out_dir).free
    if need > free:
        raise InvalidInput(
            f"the world needs {need / 1e9:.1f} GB but {out_dir} has {free / 1e9:.1f} GB free; "
            f"pick a smaller D (now {D}) or m (now {m})"
        )
    for name in existing:
        (out_dir / name).unlink()

    tb = _Tables(float(paraphrase))
    t1, t2 = _prototypes(seed, D)
    n_bytes = 0
    for code, split in enumerate(_SPLITS):
        if sizes[split]:
            n_bytes += _write_split(out_dir, split, code, sizes[split], seed, m, D, noise,
                                    near_duplicates, tb, t1, t2)  # fmt: skip
    meta = {
        "generator": "isr.ingest.synthetic_world",
        "version": GENERATOR_VERSION,
        "layout": "scan-precomp",
        "seed": seed,
        "sizes": {k: v for k, v in sizes.items() if v},
        "m": m,
        "D": D,
        "dtype": "float32",
        "noise": noise,
        "near_duplicates": near_duplicates,
        "paraphrase": paraphrase,
        "chunk": _CHUNK,
        "objects": [{"label": lab, "category": c, "words": list(w)} for lab, c, w in OBJECTS],
        "attributes": [
            {"label": lab, "kind": k, "words": list(w), "applies_to": list(c)}
            for lab, k, w, c in ATTRIBUTES
        ],
        "relations": [
            {"label": lab, "words": list(w), "subjects": list(s), "objects": list(o)}
            for lab, w, s, o in RELATIONS
        ],
    }
    tmp = out_dir / "world.json.partial"
    tmp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "world.json")  # written last: its presence means the world is whole
    return WorldInfo(out_dir, {k: v for k, v in sizes.items() if v}, m, D, n_bytes)


def _write_split(
    out_dir: Path, split: str, code: int, n: int, seed: int, m: int, D: int, noise: float,
    near_dup: float, tb: _Tables, t1: np.ndarray, t2: np.ndarray,
) -> int:  # fmt: skip
    """Write one split; files appear under their final names only once complete."""
    ims_tmp = out_dir / f"{split}_ims.npy.partial"
    caps_tmp = out_dir / f"{split}_caps.txt.partial"
    try:
        objects, dup_of = _stream_split(ims_tmp, caps_tmp, code, n, seed, m, D, noise, near_dup,
                                        tb, t1, t2)  # fmt: skip
    except BaseException:
        ims_tmp.unlink(missing_ok=True)
        caps_tmp.unlink(missing_ok=True)
        raise
    os.replace(ims_tmp, out_dir / f"{split}_ims.npy")
    os.replace(caps_tmp, out_dir / f"{split}_caps.txt")
    np.save(out_dir / f"{split}_objects.npy", objects)
    np.save(out_dir / f"{split}_dup_of.npy", dup_of)
    return int((out_dir / f"{split}_ims.npy").stat().st_size)


def _stream_split(
    ims_path: Path, caps_path: Path, code: int, n: int, seed: int, m: int, D: int, noise: float,
    near_dup: float, tb: _Tables, t1: np.ndarray, t2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    objects = np.full((n, _MAX_OBJECTS + 1), -1, dtype=np.int16)  # last column: the place
    dup_of = np.full(n, -1, dtype=np.int32)
    budget = m - max(1, m // 4)  # at least a quarter of the regions are clutter
    scale = np.float32(noise / math.sqrt(D) / _UNIFORM_STD)
    # The integers are uniform on [-128, 127], mean -0.5: shift the prototypes to centre noise.
    t1 = t1 + np.float32(0.5) * scale
    # Features go out through plain writes from a second thread, two chunks in flight: on this
    # project's machines a memmap written page by page ran at half the speed of write(), and
    # the disk, not numpy, bounds the time of a large world.
    bufs = [np.empty((_CHUNK, m, D), dtype=np.float32) for _ in range(2)]
    tmp = np.empty((_CHUNK, m, D), dtype=np.float32)
    pending: list[Future[int] | None] = [None, None]
    header = {"descr": "<f4", "fortran_order": False, "shape": (n, m, D)}
    with (
        ims_path.open("wb") as f,
        caps_path.open("w", encoding="utf-8", newline="\n") as caps,
        ThreadPoolExecutor(max_workers=1) as writer,
    ):
        np.lib.format.write_array_header_1_0(f, header)
        for ci, c0 in enumerate(range(0, n, _CHUNK)):
            b = min(_CHUNK, n - c0)
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, code, ci])))
            rnd = random.Random(int(rng.integers(2**62)))
            flat1: list[int] = []
            flat2: list[int] = []
            lens = np.empty(b, dtype=np.int64)
            lines: list[str] = []
            scenes: list[_Scene] = []
            for i in range(b):
                if scenes and rnd.random() < near_dup:
                    j = int(rnd.random() * len(scenes))
                    s = _near_duplicate(rnd, tb, scenes[j])
                    dup_of[c0 + i] = c0 + j
                else:
                    s = _new_scene(rnd, tb)
                scenes.append(s)
                objects[c0 + i, : len(s[0])] = [x[0] for x in s[0]]
                objects[c0 + i, _MAX_OBJECTS] = s[2]
                r1, r2 = _regions(rnd, s, budget)
                flat1 += r1
                flat2 += r2
                lens[i] = len(r1)
                lines += [_caption(rnd, tb, s) for _ in range(5)]
            caps.write("\n".join(lines) + "\n")

            # Clutter everywhere, then the scene's regions in the first lens[i] slots, then a
            # per-image shuffle so a region's position says nothing about what it shows.
            idx1 = len(t1) - _N_BACKGROUND + rng.integers(0, _N_BACKGROUND, (b, m))  # (b, m)
            idx2 = np.full((b, m), -1, dtype=np.int64)
            rows = np.repeat(np.arange(b), lens)
            cols = np.arange(len(rows)) - np.repeat(np.cumsum(lens) - lens, lens)
            idx1[rows, cols] = flat1
            idx2[rows, cols] = flat2
            perm = np.argsort(rng.random((b, m)), axis=1)
            idx1 = np.take_along_axis(idx1, perm, axis=1)
            idx2 = np.take_along_axis(idx2, perm, axis=1)

            slot = ci % 2
            busy = pending[slot]
            if busy is not None:
                busy.result()  # the buffer is free once its write returned
            x = np.take(t1, idx1, axis=0, out=bufs[slot][:b])  # (b, m, D)
            rr, cc = np.nonzero(idx2 >= 0)
            x[rr, cc] += t2[idx2[rr, cc]]
            # Uniform integer noise: a fraction of the cost of Gaussian draws, and nothing the
            # world is used for needs Gaussian region noise.
            z = rng.integers(-128, 128, size=(b, m, D), dtype=np.int8)
            np.multiply(z, scale, out=tmp[:b])
            np.add(x, tmp[:b], out=x)
            pending[slot] = writer.submit(f.write, x.data)
        for p in pending:
            if p is not None:
                p.result()
    return objects, dup_of
