"""/docs and /redoc render from the app's own assets with the network blocked; unknown page URLs
answer the HTML error page (with a heading), API URLs keep the JSON error."""
from __future__ import annotations

import pytest

from tests.support.browser import block_the_network, browser, new_page, no_chromium  # noqa: F401
from tests.support.live_server import live_server  # noqa: F401  (fixture)


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".swagger-ui .opblock"),
                                              ("/redoc", "h1:has-text('annotune')")])
@pytest.mark.browser
@no_chromium
def test_api_docs_render_offline(browser, live_server, path, ready):  # noqa: F811
    page = new_page(browser, live_server)
    aborted = block_the_network(page.context)
    page.goto(path)
    page.wait_for_selector(ready, timeout=20_000)
    assert "/api/v1/projects" in page.inner_text("body")
    assert aborted == []                    # nothing was even asked of the outside world
    assert page.js_errors == []


def test_unknown_page_url_answers_the_html_404(client):
    resp = client.get("/no/such/page", headers={"accept": "text/html,application/xhtml+xml"})
    assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")
    assert "<h1>404 · Not found</h1>" in resp.text and 'data-error-code="not_found"' in resp.text
    api = client.get("/api/v1/no/such/thing")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_error_pages_have_a_heading(client, db, factories):
    owner = factories.make_actor(db)
    factories.browser_login(client, owner.email)
    resp = client.get("/projects/999999/documents")
    assert resp.status_code == 404 and "<h1>404 · Not found</h1>" in resp.text
