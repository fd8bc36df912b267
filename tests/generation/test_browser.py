"""In Chromium: the generation form's defaults never start a large job without asking, never run
over every document unasked, and never offer a second-stage template as the first stage."""
from __future__ import annotations

from sqlalchemy import func, select

from service.models import GenerationJob
from tests.generation.test_engine import make_chunks
from tests.support.browser import browser, login, needs_chromium  # noqa: F401  (fixture)
from tests.support.live_server import live_server  # noqa: F401  (fixture)

pytestmark = needs_chromium


def test_default_form_asks_before_a_large_job(browser, live_server, client, db, factories):  # noqa: F811
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "big"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, 301)
    client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers,
                json={"name": "slow", "base_url": "http://127.0.0.1:9/v1", "model": "m"})
    page = login(browser, live_server, owner.email)
    page.goto(f"/projects/{pid}/generation")
    form = page.locator("#new-job")
    options = form.locator("[name=template_id] option").all_inner_texts()
    assert options and not any("(answer," in o for o in options)
    assert form.locator("[name=template_id] option:checked").inner_text().startswith("question.")

    page.click("#start-job")                      # defaults: no documents chosen
    page.wait_for_selector("#job-msg:has-text('Choose documents')")
    form.locator("[name=all_documents]").check()
    page.click("#start-job")
    page.wait_for_selector("#job-confirm:not([hidden])")
    text = page.inner_text("[data-testid=job-confirm-text]")
    assert "301 units" in text and "prompt" in text
    assert "301 unit(s)" in page.inner_text("[data-testid=job-plan]")
    page.click("#job-confirm-cancel")
    page.wait_for_selector("#job-msg:has-text('Not started.')")
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(GenerationJob)) == 0

    form.locator("[name=chunk_ids]").fill("abc")
    page.click("#plan-job")
    page.wait_for_selector("#job-msg:has-text('not a chunk id')")
    assert page.js_errors == []


def test_preview_renders_the_text_being_edited(browser, live_server, client, db, factories):  # noqa: F811
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "tpl"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, 1)
    tid = client.post(f"/api/v1/projects/{pid}/templates", headers=owner.headers, json={
        "name": "e", "kind": "custom", "text": "Saved: {{ text }}"}).json()["id"]
    page = login(browser, live_server, owner.email)
    page.goto(f"/projects/{pid}/templates/{tid}")
    assert "variables: assistant_role, heading, n, question" in page.inner_text("#template")
    page.fill("[name=text]", "Edited <b>{{ n }}</b>: {{ text }}")
    page.click("#preview")
    page.wait_for_selector("#rendered:has-text('Edited')")
    assert page.inner_text("#rendered").startswith("Edited <b>1</b>: 摘要0")  # text, not HTML
    page.fill("[name=text]", "ok\n{{ text | nosuchfilter }}")
    page.click("#preview")
    page.wait_for_selector("#rendered:has-text('nosuchfilter')")
    assert "line 2" in page.inner_text("#rendered")
    page.click("#save")
    page.wait_for_selector("#tmsg:has-text('nosuchfilter')")
    assert page.js_errors == []
