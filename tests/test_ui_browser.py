"""The search page in a real headless browser (Debian's Chromium driven by Playwright): text
and image queries, the index picker, filters, result cards with thumbnails or captions, the
stage table, and error messages. Skips, with a warning naming what is missing, where there is
no browser. The screenshot goes to tmp_path, and to $ISR_SCREENSHOT_DIR when that is set."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_es import serve
from ingest_helpers import CAPTIONS
from photo_helpers import photo_gallery

from isr.app.image_query import ImageQueries
from isr.encoders.bundle import Bundle
from isr.ingest.captions import CaptionSource
from isr.ingest.loader import IngestOptions, load_gallery
from isr.plugin.http.server import ServerConfig, create_app

BROWSERS = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")


def _browser() -> str:
    """The Chromium executable, or skip loudly saying what to install."""
    why = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why.append("the Python package `playwright` is not installed (pip install playwright)")
    exe = os.environ.get("ISR_CHROMIUM") or next(
        (p for p in (shutil.which(b) or (b if os.path.isfile(b) else None) for b in BROWSERS) if p),
        None,
    )
    if exe is None:
        why.append("no Chromium found (apt-get install -y chromium, or set ISR_CHROMIUM)")
    if why:
        reason = "BROWSER TEST NOT RUN: " + "; ".join(why)
        warnings.warn(reason, pytest.PytestWarning, stacklevel=2)
        pytest.skip(reason)
    assert exe is not None
    return exe


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    exe = _browser()
    tmp = tmp_path_factory.mktemp("ui")
    root, bundle_dir, photos = photo_gallery(tmp)
    caps = tmp / "caps.txt"
    caps.write_text("\n".join(CAPTIONS) + "\n")
    load_gallery(CaptionSource(caps), str(root / "captions"), Bundle.load(bundle_dir),
                 IngestOptions(progress=False))  # fmt: skip
    q = ImageQueries.load(bundle_dir)
    with serve(create_app(ServerConfig(root=root), encoder=q, image_encoder=q)) as url:
        os.environ["_ISR_TEST_CHROMIUM"] = exe
        yield url, photos


@pytest.fixture(scope="module")
def page(site: tuple[str, Path]) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=os.environ["_ISR_TEST_CHROMIUM"], headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )  # fmt: skip
        p = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        p.on("pageerror", lambda e: errors.append(str(e)))
        p.goto(site[0] + "/")
        p.wait_for_selector("#index option[value=photos]", state="attached")
        yield p
        assert not errors, errors  # no JavaScript error on the page
        browser.close()


def _search(page, text: str = "", filters: str = "", ablation: str = "full") -> None:
    page.fill("#filters", filters)
    page.select_option("#ablation", ablation)
    if text:
        page.fill("#q", text)
    page.click("#go")
    page.wait_for_function(
        "() => !document.getElementById('status').textContent.startsWith('searching')"
    )


def test_text_query_cards_thumbnails_and_stages(page, tmp_path: Path) -> None:
    page.select_option("#index", "photos")
    page.wait_for_function(
        "() => document.getElementById('field-hint').textContent.includes('license')"
    )
    _search(page, "a dog runs on the beach")
    status = page.text_content("#status")
    assert "6 of 6 hits" in status and "text query" in status, status
    ids = page.eval_on_selector_all(".card .id", "els => els.map(e => e.textContent)")
    assert sorted(ids) == ["a.jpg", "anim.gif", "trips/2019/c.webp", "trips/2019/d.bmp",
                           "trips/b.png", "trips/rotated.jpg"]  # fmt: skip
    page.wait_for_function(
        "() => [...document.querySelectorAll('.card img.thumb')].every(i => i.complete && i.naturalWidth > 0)"
    )
    sizes = page.eval_on_selector_all(
        ".card img.thumb", "els => els.map(e => [e.alt, e.naturalWidth, e.naturalHeight])"
    )
    assert ["trips/rotated.jpg", 20, 40] in sizes  # served upright, from the gallery's folder
    scores = page.text_content(".card .scores")
    assert "fast" in scores and "max-sim" in scores
    stages = page.eval_on_selector_all(
        "#stages tr.stage td:first-child", "els => els.map(e => e.textContent)"
    )
    assert stages[0] == "encode" and len(stages) >= 3, stages
    shot = tmp_path / "ui_search.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    out = os.environ.get("ISR_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(out) / "ui_search.png")


def test_filters_narrow_the_cards(page) -> None:
    page.select_option("#index", "photos")
    _search(page, "a dog runs on the beach", filters="license=cc-by")
    ids = page.eval_on_selector_all(".card .id", "els => els.map(e => e.textContent)")
    assert sorted(ids) == ["a.jpg", "anim.gif"]
    _search(page, "a dog runs on the beach", filters="width>=30 license!=cc-by")
    ids = page.eval_on_selector_all(".card .id", "els => els.map(e => e.textContent)")
    assert sorted(ids) == ["trips/2019/c.webp", "trips/2019/d.bmp"]
    _search(page, "a dog", filters="colour=red")
    assert page.get_attribute("#status", "class") == "error"
    assert 'unknown filter field "colour"' in page.text_content("#status")


def test_image_query_from_an_upload(page, site: tuple[str, Path]) -> None:
    page.select_option("#index", "photos")
    page.set_input_files("#file", str(site[1] / "trips" / "b.png"))
    page.wait_for_function(
        "() => document.getElementById('query-image').style.display === 'inline'"
    )
    _search(page, ablation="exhaustive")
    assert "image query" in page.text_content("#status")
    assert page.text_content(".card .id") == "trips/b.png"  # the photo itself comes first


def test_caption_gallery_shows_text_cards(page) -> None:
    page.fill("#q", "")
    page.set_input_files("#file", [])
    page.select_option("#index", "captions")
    _search(page, "two cats sleep on a red sofa", ablation="exhaustive")
    caps = page.eval_on_selector_all(".card .caption", "els => els.map(e => e.textContent)")
    assert sorted(caps) == sorted(CAPTIONS)
    assert page.eval_on_selector_all(".card img", "els => els.length") == 0
