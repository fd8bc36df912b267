"""Headless Debian Chromium driven by Playwright: one browser per module, a logged-in page per
test, JavaScript errors collected on ``page.js_errors``."""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.factories import PASSWORD

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
no_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")
needs_chromium = [pytest.mark.browser, no_chromium]  # pytestmark of a browser test module


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def new_page(browser, live_server):
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.on("dialog", lambda d: d.accept())
    page.js_errors = errors  # type: ignore[attr-defined]
    return page


def login(browser, live_server, email: str, password: str = PASSWORD):
    page = new_page(browser, live_server)
    page.goto("/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/projects")
    return page


def block_the_network(context) -> list[str]:
    """Abort every request that leaves the loopback interface; returns the aborted URLs."""
    from urllib.parse import urlsplit

    aborted: list[str] = []

    def handle(route) -> None:
        url = route.request.url
        host = urlsplit(url).hostname or ""
        if host in ("localhost", "::1") or host.startswith("127.") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            aborted.append(url)
            route.abort()

    context.route("**/*", handle)
    return aborted
