"""Every browser page, with real objects behind it, renders in headless Chromium without a server
error or a JavaScript error, and the documents page uploads a file by drag-and-drop input."""
from __future__ import annotations

import io
import os

import pytest

from tests.support.factories import PASSWORD
from tests.support.live_server import live_server  # noqa: F401  (fixture)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium not installed")]


def _world(client, db, factories):
    owner = factories.make_actor(db, is_admin=False)
    h = owner.headers
    pid = client.post("/api/v1/projects", json={"name": "Smoke <i>test</i>"}, headers=h).json()["id"]
    doc = client.post(f"/api/v1/projects/{pid}/documents", headers=h, files=[(
        "files", ("notes.md", io.BytesIO("# 标题\n\n正文 <script>x</script> text.\n".encode()), "text/markdown"))]
    ).json()["results"][0]["document_id"]
    for i in range(4):
        client.post(f"/api/v1/projects/{pid}/samples", headers=h, json={
            "status": "accepted", "messages": [{"role": "user", "content": f"q{i} <b>"},
                                               {"role": "assistant", "content": f"a{i} {{{{ 7*7 }}}}"}]})
    ds = client.post(f"/api/v1/projects/{pid}/datasets", headers=h, json={"name": "d"}).json()
    v1 = client.post(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions", headers=h,
                     json={"split": {"train": 0.5, "validation": 0.25, "test": 0.25}}).json()
    v2 = client.post(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions", headers=h,
                     json={"split": {"train": 0.5, "validation": 0.25, "test": 0.25}, "seed": 3}).json()
    templates = client.get(f"/api/v1/projects/{pid}/templates", headers=h).json()["items"]
    sid = client.get(f"/api/v1/projects/{pid}/samples", headers=h).json()["items"][0]["id"]
    imp = client.post(f"/api/v1/projects/{pid}/imports", headers=h, files={"file": (
        "x.jsonl", io.BytesIO(b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'))}
    ).json()
    return owner, pid, {
        "doc": doc, "ds": ds["id"], "v1": v1["id"], "v2": v2["id"], "tpl": templates[0]["id"],
        "sample": sid, "import": imp["id"]}


def test_every_page_renders_without_errors(app, client, db, factories, live_server):  # noqa: F811
    from playwright.sync_api import sync_playwright

    owner, pid, ids = _world(client, db, factories)
    paths = [
        "/projects", f"/projects/{pid}", f"/projects/{pid}/members", f"/projects/{pid}/documents",
        f"/projects/{pid}/documents/{ids['doc']}", f"/projects/{pid}/generation",
        f"/projects/{pid}/templates/{ids['tpl']}", f"/projects/{pid}/samples",
        f"/projects/{pid}/samples/{ids['sample']}", f"/projects/{pid}/review",
        f"/projects/{pid}/review/dashboard", f"/projects/{pid}/review/adjudicate",
        f"/projects/{pid}/review/settings", f"/projects/{pid}/imports/new",
        f"/projects/{pid}/imports/{ids['import']}", f"/projects/{pid}/datasets",
        f"/projects/{pid}/datasets/{ids['ds']}",
        f"/projects/{pid}/datasets/{ids['ds']}/versions/{ids['v1']}",
        f"/projects/{pid}/datasets/{ids['ds']}/versions/{ids['v1']}/diff/{ids['v2']}",
        f"/projects/{pid}/training", f"/projects/{pid}/evaluation",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(base_url=live_server.url)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        page.on("dialog", lambda d: d.accept())
        page.goto("/login")
        page.fill("input[name=email]", owner.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/projects")
        failures = []
        for path in paths:
            resp = page.goto(path)
            page.wait_for_load_state("networkidle")
            if resp.status != 200:
                failures.append(f"{path}: {resp.status}")
            body = page.content()
            if "<script>x</script>" in body:
                failures.append(f"{path}: user text not escaped")
            if path.endswith("/samples") and "{{ 7*7 }}" not in page.inner_text("body"):
                failures.append(f"{path}: template syntax in user text was evaluated")
        # documents page: upload through the page's file input, progress reaches 100
        page.goto(f"/projects/{pid}/documents")
        page.set_input_files("#file-input", files=[{"name": "more.txt", "mimeType": "text/plain",
                                                    "buffer": "hello 你好".encode()}])
        page.wait_for_selector("#upload-list li span.muted:has-text('uploaded')")
        browser.close()
    assert not failures, failures
    assert not errors, errors


def test_generation_and_training_forms_work_in_the_browser(app, client, db, factories, live_server):  # noqa: F811
    from playwright.sync_api import sync_playwright

    from tests.generation.test_engine import make_chunks
    from tests.support.openai_server import FakeOpenAIServer

    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "forms"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, 2)
    for i in range(4):
        client.post(f"/api/v1/projects/{pid}/samples", headers=owner.headers, json={
            "status": "accepted", "messages": [{"role": "user", "content": f"q{i}"},
                                               {"role": "assistant", "content": f"a{i}"}]})
    ds = client.post(f"/api/v1/projects/{pid}/datasets", headers=owner.headers, json={"name": "d"}).json()
    client.post(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions", headers=owner.headers, json={})
    with FakeOpenAIServer(responder=lambda r: "关键词") as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(base_url=live_server.url)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto("/login")
        page.fill("input[name=email]", owner.email)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/projects")

        page.goto(f"/projects/{pid}/generation")
        box = page.locator("#new-provider")
        box.locator("[name=name]").fill("fake vLLM")
        box.locator("[name=base_url]").fill(server.url)
        box.locator("[name=model]").fill("fake-model")
        box.locator("[name=api_key]").fill("sk-browser-secret-123456")
        page.click("#add-provider")
        page.wait_for_selector("#new-provider li:has-text('fake vLLM')")
        assert "sk-browser-secret-123456" not in page.content()
        page.locator("#new-provider li:has-text('fake vLLM') [data-test-provider]").click()
        page.wait_for_selector("#new-provider li:has-text('fake vLLM') [data-test-result]:has-text('ok')")
        job = page.locator("#new-job")
        job.locator("[name=template_id]").select_option(label=next(
            o for o in job.locator("[name=template_id] option").all_inner_texts() if o.startswith("keywords.zh")))
        job.locator("[name=provider_id]").select_option(label="fake vLLM · fake-model")
        job.locator("[name=all_documents]").check()     # no longer the silent default
        page.click("#start-job")
        page.wait_for_selector("tr[data-job] td.st:has-text('succeeded')")
        assert "2 / 2" in page.locator("tr[data-job] td.done").first.inner_text()

        page.goto(f"/projects/{pid}/training")
        form = page.locator("#new-training")
        form.locator("[name=base_model]").fill("no/such-model")
        page.click("#start-training")
        page.wait_for_selector("#train-msg:has-text('unknown base model')")
        browser.close()
    assert not errors, errors
