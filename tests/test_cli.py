"""The `isr` command line: index create/stats/delete and search, with clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
from click.testing import CliRunner
from conftest import random_items

from isr.app.cli import main
from isr.plugin.embedded.index import EmbeddedIndex


def _index(tmp_path: Path) -> Path:
    runner = CliRunner()
    path = tmp_path / "idx"
    res = runner.invoke(
        main,
        [
            "index",
            "create",
            str(path),
            "--d-fast",
            "16",
            "--d-frag",
            "8",
            "--max-frags",
            "4",
            "--r-i",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    items = random_items(40)
    with EmbeddedIndex.open(path) as idx:
        idx.add([f"d{i}" for i in range(40)], items, [{"n": i} for i in range(40)])
        idx.commit()
    return path


def test_create_stats_search_delete(tmp_path: Path) -> None:
    runner = CliRunner()
    path = _index(tmp_path)
    res = runner.invoke(main, ["index", "stats", str(path)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["documents"] == 40
    q = random_items(1, seed=7)
    qfile = tmp_path / "q.json"
    qfile.write_text(
        json.dumps(
            {
                "fast": q.fast[0].tolist(),
                "fragments": q.fragments[0].tolist(),
                "mask": q.mask[0].tolist(),
                "keywords": list(q.keywords[0].labels),
            }
        )
    )
    res = runner.invoke(
        main,
        [
            "search",
            str(path),
            "--query",
            str(qfile),
            "--size",
            "3",
            "--rerank-window",
            "10",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert len(out["hits"]) == 3 and out["profile"]["gallery"] == 40
    npz = tmp_path / "q.npz"
    np.savez(
        npz,
        fast=q.fast[0],
        fragments=q.fragments[0],
        mask=q.mask[0],
        keywords=np.array(q.keywords[0].labels),
    )
    res = runner.invoke(
        main,
        [
            "search",
            str(path),
            "--query",
            str(npz),
            "--size",
            "3",
            "--rerank-window",
            "10",
            "--filter",
            '{"range": {"n": {"lt": 10}}}',
        ],
    )
    assert res.exit_code == 0, res.output
    assert "rerank" in res.output
    res = runner.invoke(main, ["index", "delete", str(path), "--yes"])
    assert res.exit_code == 0 and not path.exists()


def test_errors_are_one_line_and_exit_nonzero(tmp_path: Path) -> None:
    runner = CliRunner()
    path = _index(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"fast": [1.0] * 5, "fragments": [[1.0] * 8]}))
    res = runner.invoke(main, ["search", str(path), "--query", str(bad)])
    assert res.exit_code != 0 and "fast vector has 5 dims, the index has 16" in res.output
    res = runner.invoke(main, ["search", str(path), "--query", str(tmp_path / "missing.json")])
    assert res.exit_code != 0 and "does not exist" in res.output
    res = runner.invoke(main, ["search", str(path)])
    assert res.exit_code != 0 and "exactly one of --query FILE and --text TEXT" in res.output
    res = runner.invoke(main, ["search", str(path), "--text", "a dog"])
    assert res.exit_code != 0 and "needs --bundle" in res.output
    # one size rule for the CLI and HTTP, Elasticsearch's: 0 (only the total) to 10000
    res = runner.invoke(main, ["search", str(path), "--query", str(bad), "--size", "10001"])
    assert res.exit_code != 0 and "--size must be an integer in [0, 10000]" in res.output
    res = runner.invoke(main, ["index", "stats", str(tmp_path / "nope")])
    assert res.exit_code != 0 and "no isr index" in res.output
    res = runner.invoke(
        main, ["index", "create", str(tmp_path / "x"), "--d-fast", "0", "--d-frag", "8"]
    )
    assert res.exit_code != 0 and "d_fast must be a positive integer" in res.output
    # the server's own wording names the options, not Python's names (kept from the ES suite)
    res = runner.invoke(main, ["serve", "--root", str(tmp_path), "--es-url", "http://127.0.0.1:1"])
    assert res.exit_code != 0 and (
        "exactly one of --root DIR (embedded indexes) and --es-url URL" in res.output
    )


def _params(cmd: click.Command) -> list[tuple[str | None, tuple[str, ...]]]:
    return [(p.name, tuple(p.opts)) for p in cmd.params]


def test_documented_scripts_run_the_apps_commands_with_the_same_options() -> None:
    """`python ingest/load_gallery.py` is `isr load`, `python eval/<name>.py` is `isr eval <name>`
    (`isr bench` for eval/bench.py): the same click command, so the same options."""
    root = Path(__file__).resolve().parents[1]
    ctx = click.Context(main)
    load = main.get_command(ctx, "load")
    assert isinstance(load, click.Group)
    assert {"precomp", "karpathy", "captions", "encoded", "images"} <= set(load.commands)
    ev = main.get_command(ctx, "eval")
    assert isinstance(ev, click.Group)
    names = {
        "run_trec_style": "trec", "table2": "table2", "make_caption_images": "make-caption-images",
        "bench_ingest": "bench-ingest", "bench_facade": "bench-facade",
        "bench_maxsim": "bench-maxsim", "bench": "bench",
    }  # fmt: skip
    for script, name in names.items():
        ns: dict[str, object] = {}
        exec((root / "eval" / f"{script}.py").read_text(), ns)  # the shim, minus __main__
        shim = next(v for v in ns.values() if isinstance(v, click.Command))
        assert shim is ev.commands[name], script
        assert _params(shim) == _params(ev.commands[name])
    assert main.get_command(ctx, "bench") is ev.commands["bench"]
    ns = {}
    exec((root / "ingest" / "load_gallery.py").read_text(), ns)
    assert ns["main"] is load
    out = subprocess.run(
        [sys.executable, str(root / "eval" / "run_trec_style.py"), "--help"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)}, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0 and "--r-t-sweep" in out.stdout, out.stderr


def test_isr_bench_parses_its_own_options() -> None:
    """`isr bench` is a click command, not a forwarder of raw argv: a wrong option is refused
    by name, before anything runs."""
    res = CliRunner().invoke(main, ["bench", "--no-such-option"])
    assert (
        res.exit_code == 2 and "No such option" in res.output and "--no-such-option" in res.output
    )
    res = CliRunner().invoke(main, ["bench", "--sizes", "ten"])
    assert res.exit_code != 0 and "--sizes" in res.output


def test_index_names_are_checked_where_they_enter() -> None:
    res = CliRunner().invoke(main, ["check", "Bad", "--es-url", "http://localhost:1"])
    assert res.exit_code == 2 and "index names are lowercase" in res.output
