"""Keyword options everywhere a query is made: HTTP ext.isr.keywords, CLI flags, and the
index's recorded defaults (IndexConfig.keywords) that fill what a query does not name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import fill

from isr.app.cli import main
from isr.app.presets import keyword_defaults
from isr.errors import Conflict, InvalidInput
from isr.ingest.encoded_world import EncodedWorld, encoded_queries
from isr.plugin.config import IndexConfig, read_manifest
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.http.shapes import KEYWORD_KEYS, parse_search
from isr.plugin.pipeline import KeywordOptions, SearchOptions, search

Q = {"fast": [1.0] * 4, "fragments": [[1.0] * 4]}


def _body(**kw: object) -> dict:
    return {"ext": {"isr": {"query_encoded": Q, "keywords": kw}}}


def test_http_accepts_every_keyword_option() -> None:
    given = {"r_t": 2, "mode": "minimum_should_match", "minimum_should_match": 2, "text": "merge",
             "rule": "cost", "alpha": 0.5, "p_min": 0.05, "mass": 0.9, "stop": 0.4, "r_i": 5, "miss": 0.05,
             "gain": 0.5, "scale": 0.7}  # fmt: skip
    assert set(given) == set(KEYWORD_KEYS)
    kw = parse_search(_body(**given)).options.keywords
    assert {k: getattr(kw, k) for k in given} == given
    assert sorted(kw.given or ()) == sorted(given)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"text": "nouns"}, "ext.isr.keywords.text 'nouns' is not one of"),
        ({"rule": "cheapest"}, "ext.isr.keywords.rule 'cheapest'"),
        ({"alpha": -1}, "ext.isr.keywords.alpha must be a number in [0.0, 10.0], got -1"),
        ({"alpha": "1"}, "ext.isr.keywords.alpha must be a number"),
        ({"p_min": 2}, "ext.isr.keywords.p_min must be a number in [0.0, 1.0]"),
        ({"mass": 0}, "ext.isr.keywords.mass must be > 0"),
        ({"stop": True}, "ext.isr.keywords.stop must be a number"),
        ({"r_i": 0}, "ext.isr.keywords.r_i must be in [1, 10000], got 0"),
        ({"miss": 1.5}, "ext.isr.keywords.miss must be a number in [0.0, 1.0], got 1.5"),
        ({"r_i": 2.5}, "ext.isr.keywords.r_i must be an integer"),
        ({"r_t": 2, "minimum_should_match": 3}, "minimum_should_match must be in [1, 2]"),
        ({"colour": "red"}, "unsupported key(s) ['colour']"),
    ],
)
def test_http_bad_keyword_option_names_key_and_value(kw: dict, reason: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_search(_body(**kw))
    assert reason in str(e.value)


def test_partial_options_take_the_rest_from_the_defaults() -> None:
    part = KeywordOptions.partial({"r_t": 2})
    got = part.over({"rule": "cost", "text": "merge", "r_t": 5, "r_i": 4})
    assert (got.r_t, got.rule, got.text, got.r_i, got.given) == (2, "cost", "merge", 4, None)
    full = KeywordOptions(r_t=2)  # built by hand: used as it is, the index's defaults ignored
    assert full.over({"rule": "cost"}) is full
    assert KeywordOptions.partial({}).over({}) == KeywordOptions()
    # minimum_should_match alone is checked once merged: the index's r_t may allow it
    assert KeywordOptions.partial({"minimum_should_match": 4}).over({"r_t": 5}).r_t == 5
    with pytest.raises(InvalidInput, match="minimum_should_match"):
        KeywordOptions.partial({"minimum_should_match": 4}).over({})
    with pytest.raises(InvalidInput, match="unknown option"):
        KeywordOptions(given=("colour",))


def test_index_config_records_checked_keyword_defaults(tmp_path: Path) -> None:
    c = IndexConfig(d_fast=4, d_frag=4, r_i=6, keywords={"text": "ext", "r_i": 3})
    assert IndexConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
    old = c.to_json()
    del old["keywords"]  # a manifest written before the field existed
    assert IndexConfig.from_json(old).keywords == {}
    for bad, reason in [
        ({"r_i": 7}, "keywords.r_i 7 is above the stored r_i 6"),
        ({"rule": "x"}, "keywords.rule 'x'"),
        ({"bogus": 1}, "unsupported key(s) ['bogus']"),
        ({"r_t": 2, "minimum_should_match": 3}, "minimum_should_match 3 is above r_t 2"),
        (["text"], "keywords must be an object"),
    ]:
        with pytest.raises(InvalidInput) as e:
            IndexConfig(d_fast=4, d_frag=4, r_i=6, keywords=bad)  # type: ignore[arg-type]
        assert reason in str(e.value)
    # a query-time default: reopening with other defaults is no conflict, other fields are
    c.check_compatible(IndexConfig(d_fast=4, d_frag=4, r_i=6))
    with pytest.raises(Conflict):
        c.check_compatible(IndexConfig(d_fast=4, d_frag=4, r_i=5, keywords=c.keywords))


def test_keyword_defaults_json() -> None:
    assert keyword_defaults('{"rule": "cost", "alpha": 1}') == {"rule": "cost", "alpha": 1}
    # a caption gallery (queried by images) reads the image head's p as smaller chances
    assert keyword_defaults(None, modality="text") == {**keyword_defaults(None), "gain": 0.02,
                                                       "scale": 0.667}  # fmt: skip
    assert keyword_defaults('{"r_t": 2}', modality="text") == {"r_t": 2}
    for text, reason in [
        ("{", "not valid JSON"),
        ("[1]", "expected a JSON object"),
        ('{"alpha": 20}', "--keyword-defaults.alpha must be a number in [0.0, 10.0], got 20"),
    ]:
        with pytest.raises(InvalidInput) as e:
            keyword_defaults(text)
        assert reason in str(e.value)


WORLD = EncodedWorld(n_docs=600, d_fast=16, d_frag=8, n_frags=4, n_labels=30, r_i=6, seed=5)


def _index(tmp_path: Path, keywords: dict) -> EmbeddedIndex:
    cfg = IndexConfig(d_fast=16, d_frag=8, max_frags=4, r_i=6, hnsw_m=8,
                      hnsw_ef_construction=40, keywords=keywords)  # fmt: skip
    idx = EmbeddedIndex.create(tmp_path / "idx", cfg)
    fill(idx, WORLD, 300)
    return idx


def test_search_uses_the_index_defaults_unless_the_query_names_them(tmp_path: Path) -> None:
    queries, _ = encoded_queries(WORLD, 20, seed=1)
    plain = _index(tmp_path / "a", {})
    narrow = _index(tmp_path / "b", {"r_t": 1, "r_i": 1})
    try:
        for i in range(len(queries)):
            q = queries[i]
            built_in = search(plain, q, SearchOptions())
            by_hand = search(plain, q, SearchOptions(keywords=KeywordOptions(r_t=1, r_i=1)))
            d = search(narrow, q, SearchOptions())
            # the index's defaults: what r_t 1 / r_i 1 named by hand gives, not the built-in
            assert d.profile.query_keywords == by_hand.profile.query_keywords
            assert d.total == by_hand.total
            # a query naming r_t keeps the index's r_i; one built by hand overrides everything
            part = search(narrow, q, SearchOptions(keywords=KeywordOptions.partial({"r_t": 3})))
            r3i1 = search(plain, q, SearchOptions(keywords=KeywordOptions(r_t=3, r_i=1)))
            assert part.total == r3i1.total
            full = search(narrow, q, SearchOptions(keywords=KeywordOptions()))
            assert full.total == built_in.total
        assert any(search(narrow, queries[i], SearchOptions()).total
                   < search(plain, queries[i], SearchOptions()).total
                   for i in range(len(queries)))  # fmt: skip
    finally:
        plain.close()
        narrow.close()


def test_cli_index_create_and_search_keyword_options(tmp_path: Path) -> None:
    r = CliRunner()
    path = tmp_path / "idx"
    bad = r.invoke(main, ["index", "create", str(path), "--d-fast", "16", "--d-frag", "8",
                          "--keyword-defaults", '{"rule": "cheap"}'])  # fmt: skip
    assert bad.exit_code != 0 and "--keyword-defaults.rule 'cheap'" in bad.output
    assert not path.exists()
    ok = r.invoke(main, ["index", "create", str(path), "--d-fast", "16", "--d-frag", "8",
                         "--max-frags", "4", "--r-i", "6",
                         "--keyword-defaults", '{"text": "merge", "r_i": 2}'])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    config, _ = read_manifest(path)
    assert config.keywords == {"text": "merge", "r_i": 2}
    for modality in ("image", "text"):  # without --keyword-defaults: the modality's defaults
        p = tmp_path / f"plain-{modality}"
        made = r.invoke(main, ["index", "create", str(p), "--d-fast", "16", "--d-frag", "8",
                               "--modality", modality])  # fmt: skip
        assert made.exit_code == 0, made.output
        assert read_manifest(p)[0].keywords == keyword_defaults(None, modality=modality)
    idx = EmbeddedIndex.open(path)
    fill(idx, WORLD, 300)
    idx.close()
    qfile = tmp_path / "q.json"
    q = encoded_queries(WORLD, 1, seed=2)[0][0]
    kw = q.keywords[0]
    qfile.write_text(json.dumps({
        "fast": q.fast[0].tolist(), "fragments": q.fragments[0][q.mask[0]].tolist(),
        "keywords": {"labels": list(kw.labels), "probs": [float(p) for p in kw.probs]},
    }))  # fmt: skip

    def run(*flags: str) -> dict:
        out = r.invoke(main, ["search", str(path), "--query", str(qfile), "--json", *flags])
        assert out.exit_code == 0, out.output
        return json.loads(out.output)

    with EmbeddedIndex.open(path, readonly=True) as idx:
        want = search(idx, q, SearchOptions(keywords=KeywordOptions(r_t=2, r_i=2, text="merge")))
        want6 = search(idx, q, SearchOptions(keywords=KeywordOptions(r_t=2, r_i=6)))
    assert run("--r-t", "2")["total"] == want.total
    assert run("--r-t", "2", "--r-i", "6")["total"] == want6.total
    bad_ri = r.invoke(main, ["search", str(path), "--query", str(qfile), "--r-i", "9"])
    assert bad_ri.exit_code != 0 and "r_i" in bad_ri.output
    bad_alpha = r.invoke(main, ["search", str(path), "--query", str(qfile), "--alpha", "-2"])
    assert bad_alpha.exit_code != 0 and "alpha must be a number" in bad_alpha.output
    assert np.isfinite(want.total)
