"""Driving the console in Debian's Chromium with Playwright (never a downloaded browser):
launching it, signing in, and screenshots into tests/artifacts/screenshots (CI prints the
folder). Importing this module skips the importing test module when there is no browser,
unless SYNCLINE_REQUIRE_BROWSER is set (CI), where a missing browser fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SYNCLINE_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).parent / "artifacts" / "screenshots"

if os.environ.get("SYNCLINE_REQUIRE_BROWSER"):
    import playwright.sync_api as playwright_api

    assert Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)"
else:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)

expect = playwright_api.expect


@contextmanager
def chromium() -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Any, width: int = 1280, height: int = 900) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/console")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
