"""Each index records its bundle; `isr serve` loads the bundles its indexes need (one per
fingerprint); `isr index create --bundle` makes an empty index a loader can fill."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import torch
from click.testing import CliRunner
from fake_es import serve
from ingest_helpers import saved_bundle

from isr.app.cli import main as isr_main
from isr.app.load import main as load_main
from isr.app.serve import create_app
from isr.encoders.bundle import Bundle
from isr.ingest.synthetic_world import generate_world
from isr.plugin.embedded.index import EmbeddedIndex
from isr.plugin.http.server import ServerConfig
from isr.plugin.pipeline import SearchOptions, search

QUERY = "a dog runs on the beach"


@pytest.fixture(autouse=True)
def one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's few cores are shared: small ops prefer one thread
    yield
    torch.set_num_threads(threads)


def _run(cmd: object, args: list[str]) -> str:
    res = CliRunner().invoke(cmd, args)  # type: ignore[arg-type]
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def two(tmp_path: Path) -> dict[str, Path]:
    """Two bundles (other weights, same shapes) and an index loaded with each by `isr load`."""
    world = tmp_path / "world"
    generate_world(world, n_train=30, n_dev=0, n_test=0, seed=4, m=8, D=16)
    out = {"world": world, "root": tmp_path / "root"}
    for name, seed in (("a", 0), ("b", 1)):
        out[name] = saved_bundle(tmp_path / "bundles" / name, seed=seed)
        _run(load_main, [
            "precomp", str(world), "--split", "train", "--bundle", str(out[name]),
            "--index", str(out["root"] / name), "--no-progress",
        ])  # fmt: skip
    return out


@pytest.fixture(scope="module")
def bundle_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_bundle(tmp_path_factory.mktemp("bundle") / "a")


def _ask(c: httpx.Client, index: str, size: int = 5) -> httpx.Response:
    body = {"size": size, "ext": {"isr": {"query_text": QUERY}}}
    return c.post(f"/{index}/_search?search_pipeline=isr", json=body)


def test_two_indexes_two_bundles_one_server(two: dict[str, Path]) -> None:
    fps = {n: Bundle.load(two[n]).fingerprint for n in "ab"}
    assert fps["a"] != fps["b"]
    for n in "ab":  # recorded at load time: in the config and in the load's commit
        with EmbeddedIndex.open(two["root"] / n, readonly=True) as idx:
            assert idx.config.bundle_fingerprint == fps[n]
            assert idx.config.bundle_path == str(two[n].resolve())
            (entry,) = idx.committed_meta()["ingest"]["sources"]
            assert entry["bundle"] == fps[n] and entry["bundle_path"] == str(two[n].resolve())
    app = create_app(ServerConfig(root=two["root"]))  # no --bundle
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        ready = c.get("/_isr/ready").json()
        assert ready["encoder"] == "lazy" and ready["bundles"] == []
        for n in "ab":
            r = _ask(c, n)
            assert r.status_code == 200, r.text
            with EmbeddedIndex.open(two["root"] / n, readonly=True) as idx:  # its own bundle
                q = Bundle.load(two[n]).encode_texts([QUERY])
                want = search(idx, q, SearchOptions(size=5))
            assert [h["_id"] for h in r.json()["hits"]["hits"]] == [h.id for h in want.hits]
            scores = [h["_isr"]["fast_score"] for h in r.json()["hits"]["hits"]]
            assert scores == pytest.approx([h.fast_score for h in want.hits], abs=1e-5)
        assert sorted(c.get("/_isr/ready").json()["bundles"]) == sorted(
            f[:12] for f in fps.values()
        )
        assert _ask(c, "a").status_code == 200  # cached: one load per fingerprint
        facade = app.state.facade
        assert len(facade._by_path) == 2 and set(facade._by_fp) == set(fps.values())


def test_a_missing_bundle_is_named_and_bundle_overrides(two: dict[str, Path]) -> None:
    moved = two["b"].parent / "b-moved"
    shutil.move(two["b"], moved)
    fp_b = Bundle.load(moved).fingerprint
    with (
        serve(create_app(ServerConfig(root=two["root"]))) as url,
        httpx.Client(base_url=url, timeout=60) as c,
    ):
        assert _ask(c, "a").status_code == 200  # the other index is not affected
        r = _ask(c, "b")
        assert r.status_code == 404, r.text
        err = r.json()["error"]
        assert err["type"] == "resource_not_found_exception"
        reason = err["reason"]
        assert f"index [b] was filled with encoder bundle {fp_b[:12]}..." in reason
        assert "bundles/b does not exist" in reason and "--bundle DIR" in reason
        assert str(two["b"].parent) not in reason  # no server paths in error bodies
    # --bundle: the moved bundle serves index b; index a still loads its own
    app = create_app(ServerConfig(root=two["root"], bundle=moved))
    with serve(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert _ask(c, "b").status_code == 200
        assert _ask(c, "a").status_code == 200
        assert len(app.state.facade._by_fp) == 2


def test_a_bundle_rewritten_in_place_is_refused(two: dict[str, Path]) -> None:
    shutil.rmtree(two["b"])
    saved_bundle(two["b"], seed=7)  # another bundle at the recorded directory
    with (
        serve(create_app(ServerConfig(root=two["root"]))) as url,
        httpx.Client(base_url=url, timeout=60) as c,
    ):
        r = _ask(c, "b")
        assert r.status_code == 404 and "bundles/b is now bundle" in r.text


def test_index_create_for_a_bundle_is_filled_by_a_load(two: dict[str, Path]) -> None:
    fresh = two["root"] / "fresh"
    out = _run(isr_main, ["index", "create", str(fresh), "--bundle", str(two["a"])])
    fp = Bundle.load(two["a"]).fingerprint
    assert f"for bundle {fp[:12]}" in out
    with EmbeddedIndex.open(fresh, readonly=True) as idx:
        assert len(idx) == 0
        assert (idx.config.d_fast, idx.config.d_frag, idx.config.max_frags) == (6, 8, 8)
        assert idx.config.bundle_fingerprint == fp and idx.config.r_i == 4
    _run(load_main, [
        "precomp", str(two["world"]), "--split", "train", "--bundle", str(two["a"]),
        "--index", str(fresh), "--no-progress",
    ])  # fmt: skip
    with EmbeddedIndex.open(fresh, readonly=True) as idx:
        assert len(idx) == 30
    # another bundle is refused, naming both
    res = CliRunner().invoke(load_main, [
        "precomp", str(two["world"]), "--split", "train", "--bundle", str(two["b"]),
        "--index", str(fresh), "--no-progress",
    ])  # fmt: skip
    assert res.exit_code != 0 and "the index was filled with bundle" in res.output


def test_index_create_without_a_bundle_says_how(two: dict[str, Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    _run(isr_main, ["index", "create", str(bare), "--d-fast", "6", "--d-frag", "8"])
    res = CliRunner().invoke(load_main, [
        "precomp", str(two["world"]), "--split", "train", "--bundle", str(two["a"]),
        "--index", str(bare), "--no-progress",
    ])  # fmt: skip
    assert res.exit_code != 0
    assert "the index records no bundle" in res.output
    assert "isr index create PATH --bundle DIR" in res.output
    # --fingerprint: an index for features encoded elsewhere
    fp = Bundle.load(two["a"]).fingerprint
    fpi = tmp_path / "fp"
    _run(isr_main, ["index", "create", str(fpi), "--d-fast", "6", "--d-frag", "8",
                    "--max-frags", "8", "--fingerprint", fp])  # fmt: skip
    _run(load_main, [
        "precomp", str(two["world"]), "--split", "train", "--bundle", str(two["a"]),
        "--index", str(fpi), "--no-progress",
    ])  # fmt: skip
    with EmbeddedIndex.open(fpi, readonly=True) as idx:
        assert len(idx) == 30 and idx.config.bundle_fingerprint == fp
        assert idx.config.bundle_path == ""  # created without the bundle: its commit records it
        (entry,) = idx.committed_meta()["ingest"]["sources"]
        assert entry["bundle_path"] == str(two["a"].resolve())


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give --d-fast and --d-frag, or --bundle DIR"),
        (["--d-fast", "6"], "give --d-frag, or --bundle DIR"),
        (["--bundle", "{a}", "--d-fast", "7"], "--d-fast 7 contradicts the bundle"),
        (["--bundle", "{a}", "--max-frags", "4"], "--max-frags 4 is below the bundle's 8"),
        (["--bundle", "{a}", "--fingerprint", "x"], "give --bundle DIR or --fingerprint FP"),
    ],
)
def test_index_create_refusals(bundle_a: Path, tmp_path: Path, args: list[str], says: str) -> None:
    args = [a.format(a=bundle_a) for a in args]
    res = CliRunner().invoke(isr_main, ["index", "create", str(tmp_path / "x"), *args])
    assert res.exit_code != 0 and says in res.output, res.output
    assert not (tmp_path / "x").exists()
