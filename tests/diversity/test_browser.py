"""Real headless Chromium against the live app: the coverage view shows per-leaf counts and
follows a bulk accept made on the samples page filtered by a leaf."""
# ruff: noqa: F811  (pytest fixtures imported from tests.support.browser)
from __future__ import annotations

from service.diversity import tree
from service.models import Sample
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
