"""Real headless Chromium against the live app: the coverage view shows per-leaf counts and
follows a bulk accept made on the samples page filtered by a leaf."""
# ruff: noqa: F811  (pytest fixtures imported from tests.support.browser)
from __future__ import annotations

from sqlalchemy import select

from service.diversity import tree
from service.models import Document, Sample
from tests.support.browser import browser, login, needs_chromium  # noqa: F401  (fixture)

pytestmark = needs_chromium


def _row(page, leaf: int) -> dict[str, str]:
    row = page.locator(f'table[data-testid="coverage"] tr[data-leaf="{leaf}"]')
    return {k: row.locator(f'[data-testid="leaf-{k}"]').inner_text()
            for k in ("samples", "accepted", "share")}


def test_coverage_shows_per_leaf_counts_and_follows_a_bulk_accept(browser, live_server, db,
                                                                  factories):
    owner = factories.make_user(db)
    project = factories.make_project(db, owner, name="coverage")
    spec = tree.normalize_spec([{"name": "Fine-tuning", "children": ["LoRA", "QLoRA"]},
                                {"name": "Serving <b>fast</b>", "children": ["Batching"]}])
    leaves = {path: i for i, path in tree.add_tree(db, project_id=project.id, spec=spec)}
    lora, qlora = leaves["Fine-tuning › LoRA"], leaves["Fine-tuning › QLoRA"]
    for i in range(3):
        db.add(Sample(project_id=project.id, domain_leaf_id=lora, status="pending", version=1,
                      messages=[{"role": "user", "content": f"LoRA rank {i}?"},
                                {"role": "assistant", "content": "Small."}]))
    db.add(Sample(project_id=project.id, domain_leaf_id=qlora, status="accepted", version=1,
                  messages=[{"role": "user", "content": "QLoRA bits?"},
                            {"role": "assistant", "content": "Four."}]))
    db.add(Sample(project_id=project.id, status="pending", version=1,
                  messages=[{"role": "user", "content": "Untagged?"},
                            {"role": "assistant", "content": "Yes."}]))
    db.commit()

    page = login(browser, live_server, owner.email)
    page.goto(f"/projects/{project.id}/coverage")
    assert _row(page, lora) == {"samples": "3", "accepted": "0", "share": "0%"}
    assert _row(page, qlora) == {"samples": "1", "accepted": "1", "share": "100%"}
    assert page.inner_text('[data-testid="untagged"]') == "1"
    assert "Serving <b>fast</b> › Batching" in page.inner_text('[data-testid="empty-leaves"]')
    assert page.locator('[data-testid="coverage-chart"] .bar-row').count() == 3
    width = page.locator(f'[data-testid="coverage-chart"] .bar-row[data-leaf="{lora}"] .bar-fill')
    assert width.evaluate("(el) => el.style.width") == "100%"

    # the leaf's samples, accepted in bulk from the samples page
    page.click(f'table[data-testid="coverage"] tr[data-leaf="{lora}"] a')
    page.wait_for_url(f"**/samples?domain_leaf_id={lora}")
    page.select_option("#bulk-scope", "all")
    page.select_option("#bulk-action", "status")
    page.select_option("#bulk-status", "accepted")
    page.click("#bulk-go")
    page.wait_for_selector("#confirm:not([hidden])")
    assert "3 sample(s)" in page.inner_text('[data-testid="confirm-text"]')
    page.click("#confirm-ok")
    page.wait_for_function("() => document.getElementById('bulk-result').textContent"
                           ".includes('Changed 3 of 3')")

    page.goto(f"/projects/{project.id}/coverage")
    assert _row(page, lora) == {"samples": "3", "accepted": "3", "share": "100%"}
    assert _row(page, qlora)["accepted"] == "1"
    db.expire_all()
    assert db.query(Sample).filter(Sample.status == "pending").count() == 1  # the untagged one
    assert page.js_errors == []


def test_tree_and_pairs_edited_in_the_page(browser, live_server, db, factories):
    from service.diversity import service as diversity_service
    from service.models import DomainNode, GAPair
    from tests.diversity.conftest import make_documents

    owner = factories.make_user(db)
    project = factories.make_project(db, owner, name="edit")
    make_documents(db, project.id, docs=1, chunks=1)
    doc_id = db.scalar(select(Document.id).where(Document.project_id == project.id))
    leaves = tree.add_tree(db, project_id=project.id,
                           spec=tree.normalize_spec([{"name": "A", "children": ["a1", "a2"]}]))
    pair = diversity_service.create_pair(db, project_id=project.id, document_id=doc_id,
                                         genre="exam question", audience="student")
    db.commit()
    page = login(browser, live_server, owner.email)
    page.goto(f"/projects/{project.id}/coverage")
    # add a node under A, delete a2 (the confirm dialog is accepted)
    page.fill("#node-name", "a3 <script>alert(1)</script>")
    page.select_option("#node-parent", label="A")
    with page.expect_navigation():
        page.click("#node-add")
    page.wait_for_selector("li[data-node] >> text=a3 <script>alert(1)</script>")
    with page.expect_navigation():
        page.click(f'li[data-node="{leaves[1][0]}"] button[data-act="delete"]')
    page.wait_for_selector(f'li[data-node="{leaves[1][0]}"]', state="detached")
    db.expire_all()
    names = set(db.scalars(select(DomainNode.name).where(DomainNode.project_id == project.id)))
    assert names == {"A", "a1", "a3 <script>alert(1)</script>"}
    # edit a pair, add one; an empty genre is refused naming the field
    row = page.locator(f'#ga-pairs tr[data-pair="{pair.id}"]')
    row.locator(".pair-audience").fill("teacher")
    with page.expect_navigation():  # saved, then the page reloads
        row.locator('button[data-pair-act="save"]').click()
    assert page.locator(f'#ga-pairs tr[data-pair="{pair.id}"] .pair-audience').input_value() == "teacher"
    page.fill("#pair-genre", "")
    page.fill("#pair-audience", "engineer")
    page.click("#pair-add")
    page.wait_for_function("() => document.getElementById('tree-result').textContent"
                           ".startsWith('Genre')")
    page.fill("#pair-genre", "troubleshooting")
    page.click("#pair-add")
    page.wait_for_selector("#ga-pairs tr[data-pair] >> nth=1")
    db.expire_all()
    got = {(p.genre, p.audience) for p in db.scalars(select(GAPair))}
    assert got == {("exam question", "teacher"), ("troubleshooting", "engineer")}
    assert page.js_errors == []
