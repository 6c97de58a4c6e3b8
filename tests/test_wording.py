"""User-facing errors speak the command line's words, not Python's (issue 17, item 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from isr.app.cli import main


@pytest.mark.parametrize(
    ("args", "says", "not_says"),
    [
        (["--root", "{tmp}", "--es-url", "http://x:9200"],
         "give exactly one of --root DIR (embedded indexes) and --es-url URL", "es_url"),
        ([], "give exactly one of --root DIR", "root (embedded)"),
        (["--root", "{tmp}", "--refresh-interval", "0"],
         "--refresh-interval must be > 0 s or -1", "refresh_interval"),
        (["--root", "{tmp}", "--max-body-mb", "0.0001"],
         "request body limit (--max-body-mb) must be at least 1024 bytes", "max_body_bytes"),
        (["--root", "{tmp}", "--api-key", " k "], "the API key (--api-key, ISR_API_KEY)",
         "api_key"),
        (["--root", "{tmp}", "--port", "70000"], "--port must be an integer", ": port must"),
    ],
)  # fmt: skip
def test_serve_errors_name_the_options(
    tmp_path: Path, args: list[str], says: str, not_says: str
) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    res = CliRunner().invoke(main, ["serve", *args])
    assert res.exit_code != 0
    assert says in res.output and not_says not in res.output, res.output


def test_load_errors_name_the_options(tmp_path: Path) -> None:
    from isr.app.load import main as load

    data = tmp_path / "data.jsonl"
    data.write_text("")
    for opt in ("--batch-size", "--commit-every", "--limit", "--r-i", "--max-frags"):
        res = CliRunner().invoke(
            load, ["encoded", str(data), "--index", str(tmp_path / "i"), opt, "0"]
        )
        assert res.exit_code != 0 and f"{opt}: expected an integer >= 1, got 0" in res.output
        assert "_" not in res.output.split(":", 2)[-1].split(",")[0], res.output
