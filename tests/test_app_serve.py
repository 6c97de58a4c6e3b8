"""`isr serve` loads (and so checks) its bundle before it listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from isr.app import serve as app_serve
from isr.errors import IsrError
from isr.plugin.http.server import ServerConfig


def test_a_broken_bundle_fails_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    monkeypatch.setattr(app_serve.server, "serve", lambda app, config: started.append(app))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text("{not json")
    config = ServerConfig(root=tmp_path, bundle=bundle)
    with pytest.raises(IsrError):
        app_serve.serve(config)
    assert started == []  # never listened
