"""Real headless Chromium against the live app: keyboard-only review, draft recovery after a
reload, a conflict from a second session resolved in the page, and XSS that must not run."""
# ruff: noqa: F811  (pytest fixtures imported from tests.support.browser)
from __future__ import annotations

from service.models import Sample
from service.samples import service as samples_service
from tests.review.conftest import XSS_ANSWER, XSS_USER
from tests.support.browser import browser, login, needs_chromium  # noqa: F401  (fixture)

pytestmark = needs_chromium


def on_sample(page, sid: int) -> None:
    page.wait_for_selector(f'#review[data-sample="{sid}"]')
    page.wait_for_function("() => document.querySelectorAll('#editor textarea').length > 0")


def fresh(db, sid: int) -> Sample:
    db.expire_all()
    return db.get(Sample, sid)


def test_keyboard_review_of_five_samples(browser, live_server, db, team, make_samples):
    ids = make_samples(team.project_id, 7)
    page = login(browser, live_server, team.ann1.email)
    page.goto(f"/projects/{team.project_id}/review")
    on_sample(page, ids[0])

    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")

    page.keyboard.press("a")                      # 1: accept
    on_sample(page, ids[1])
    page.keyboard.press("e")                      # 2: edit the answer, then accept
    page.keyboard.press("End")
    page.keyboard.press("Control+End")
    page.keyboard.type(" Edited by keyboard.")
    page.keyboard.press("Escape")
    page.keyboard.press("a")
    on_sample(page, ids[2])
    page.keyboard.press("r")                      # 3: reject with a reason from the list + text
    page.wait_for_selector("#reject:not([hidden])")
    page.keyboard.press("ArrowDown")              # second configured reason
    page.keyboard.press("Tab")
    page.keyboard.type("cites the wrong page")
    page.keyboard.press("Enter")
    on_sample(page, ids[3])
    page.keyboard.press("s")                      # 4: skip
    on_sample(page, ids[4])
    page.keyboard.press("n")                      # 5: needs changes
    on_sample(page, ids[5])
    page.keyboard.press("a")                      # 6: accept
    on_sample(page, ids[6])                       # the skipped one does not come back yet
    page.keyboard.press("k")                      # previous
    on_sample(page, ids[5])
    page.keyboard.press("j")                      # next again
    on_sample(page, ids[6])
    page.keyboard.press("]")                      # focus moves through the turns
    assert page.evaluate("document.activeElement.classList.contains('turn-text')")

    got = {sid: fresh(db, sid) for sid in ids}
    assert [got[i].status for i in ids] == ["accepted", "accepted", "rejected", "pending",
                                            "needs_changes", "accepted", "pending"]
    assert got[ids[1]].messages[-1]["content"] == "Answer number 2. Edited by keyboard."
    assert got[ids[2]].reject_reason == "not supported by the source: cites the wrong page"
    assert {got[i].reviewed_by_id for i in (ids[0], ids[1], ids[2], ids[4], ids[5])} == {team.ann1.user_id}
    assert page.js_errors == []


def test_draft_survives_reload_and_conflict_from_second_session(browser, live_server, db, team, make_samples):
    sid, other = make_samples(team.project_id, 2)
    page = login(browser, live_server, team.ann1.email)
    page.goto(f"/projects/{team.project_id}/review")
    on_sample(page, sid)
    page.keyboard.press("e")
    page.keyboard.press("Control+End")
    page.keyboard.type(" DRAFT-TEXT")
    seen: list[str] = []
    page.on("dialog", lambda d: seen.append(d.type))
    page.reload()
    on_sample(page, sid)
    page.wait_for_selector('[data-testid="draft-restored"]')
    assert page.locator("#editor textarea").nth(2).input_value() == "Answer number 1. DRAFT-TEXT"
    assert "beforeunload" in seen                   # the unload warning fired for unsaved edits
    assert fresh(db, sid).version == 1              # nothing was saved behind our back

    # a second browser session edits and saves the same sample first
    page2 = login(browser, live_server, team.ann2.email)
    page2.goto(f"/projects/{team.project_id}/review?sample={sid}")
    on_sample(page2, sid)
    page2.locator("#editor textarea").nth(2).fill("Answer from the second session.")
    page2.keyboard.press("Control+s")
    page2.wait_for_function("() => document.getElementById('version').textContent === '2'")

    # our stale save is refused and shows both versions
    page.locator("#editor textarea").nth(2).focus()
    page.keyboard.press("Control+s")
    page.wait_for_selector('[data-testid="conflict"]:not([hidden])')
    assert "DRAFT-TEXT" in page.inner_text('[data-testid="conflict-mine"]')
    assert "Answer from the second session." in page.inner_text('[data-testid="conflict-theirs"]')
    assert fresh(db, sid).messages[-1]["content"] == "Answer from the second session."
    # merge by editing, then save on top of the current version
    page.click('button[data-act="merge"]')
    merged = "Answer from the second session. Plus DRAFT-TEXT."
    page.locator("#editor textarea").nth(2).fill(merged)
    page.keyboard.press("Control+s")
    page.wait_for_function("() => document.getElementById('version').textContent === '3'")
    assert fresh(db, sid).messages[-1]["content"] == merged
    assert page.evaluate("Object.keys(localStorage).filter(k => k.startsWith('annotune:draft:')).length") == 0

    # once more: the other session saves again; this time keep mine
    page2.reload()
    on_sample(page2, sid)
    page2.locator("#editor textarea").nth(2).fill("Theirs again.")
    page2.keyboard.press("Control+s")
    page2.wait_for_function("() => document.getElementById('version').textContent === '4'")
    page.locator("#editor textarea").nth(2).fill("Mine wins.")
    page.keyboard.press("Escape")
    page.keyboard.press("a")                        # a stale decision: refused, conflict shown
    page.wait_for_selector('[data-testid="conflict"]:not([hidden])')
    assert fresh(db, sid).status == "pending"
    page.click('button[data-act="keep-mine"]')
    page.wait_for_function("() => document.getElementById('version').textContent === '5'")
    assert fresh(db, sid).messages[-1]["content"] == "Mine wins."
    page.keyboard.press("a")                        # now the decision goes through
    on_sample(page, other)
    assert fresh(db, sid).status == "accepted"
    assert page.js_errors == [] and page2.js_errors == []


def test_xss_payloads_show_literally_and_run_nothing(browser, live_server, db, team, source_sample):
    sid = source_sample(team.project_id, chunk_text=f"Manual says: {XSS_ANSWER} and more.",
                        messages=[{"role": "system", "content": "{{ 7*7 }} <b>sys</b>"},
                                  {"role": "user", "content": XSS_USER},
                                  {"role": "assistant", "content": XSS_ANSWER + "\n\n```\n<script>window.__xss=3</script>\n```"}])
    samples_service.update_sample(db, project_id=team.project_id, sample_id=sid, expected_version=1,
                                  actor_id=team.ann1.user_id, tags=['"><img src=x onerror="window.__xss=4">'],
                                  messages=[{"role": "user", "content": XSS_USER},
                                            {"role": "assistant", "content": XSS_ANSWER}])
    db.commit()
    page = login(browser, live_server, team.lead.email)

    page.goto(f"/projects/{team.project_id}/review")
    on_sample(page, sid)
    page.keyboard.press("p")                        # Markdown preview renders text, not HTML
    page.wait_for_selector(".preview:not([hidden])")
    assert page.evaluate("window.__xss") is None
    values = [page.locator("#editor textarea").nth(i).input_value() for i in range(2)]
    assert values == [XSS_USER, XSS_ANSWER]
    previews = page.inner_text("#editor")
    assert "<script>window.__xss=1</script>" in previews and "{{ 7*7 }}" in previews
    chunk = page.inner_text('[data-testid="chunk"]')
    assert '<img src=x onerror="window.__xss=2">' in chunk and "49" not in chunk
    assert page.locator('[data-testid="chunk"] mark').count() >= 1
    assert page.locator("#editor img, [data-testid=chunk] img, #editor script").count() == 0

    page.goto(f"/projects/{team.project_id}/samples")
    table = page.inner_text('[data-testid="samples"]')
    assert "<script>window.__xss=1</script> what is {{ 7*7 }}?" in table
    cells = " ".join(page.locator('[data-testid="samples"] .cell-text').all_inner_texts())
    assert 'onerror="window.__xss=4"' in table and "{{ 7*7 }}" in cells and "49" not in cells
    assert page.evaluate("window.__xss") is None

    page.goto(f"/projects/{team.project_id}/samples/{sid}")
    history = page.inner_text('[data-testid="history"]')
    assert "<script>window.__xss=3</script>" in history and "{{ 7*7 }} <b>sys</b>" in history
    assert page.inner_text('[data-testid="messages"]').count("{{ 7*7 }}") == 2
    assert page.evaluate("window.__xss") is None
    assert page.js_errors == []


def test_large_bulk_change_from_the_page_runs_as_a_job_and_reports(browser, live_server, db, team,
                                                                  make_samples, monkeypatch):
    """Above the threshold the page gets 202, polls the job and reports its counts."""
    from sqlalchemy import select

    from service.models import BulkJob
    from service.review import bulk as review_bulk

    monkeypatch.setattr(review_bulk, "TASK_THRESHOLD", 3)
    monkeypatch.setattr(review_bulk, "BATCH", 2)
    ids = make_samples(team.project_id, 5)
    page = login(browser, live_server, team.lead.email)
    page.goto(f"/projects/{team.project_id}/samples")
    page.select_option("#bulk-scope", "all")
    page.select_option("#bulk-action", "add_tag")
    page.fill("#bulk-tag", "checked-in-bulk")
    page.click("#bulk-go")
    page.wait_for_selector("#confirm:not([hidden])")
    assert "5 sample(s)" in page.text_content("#confirm-text")
    page.click("#confirm-ok")
    page.wait_for_function("() => /Changed 5 of 5 sample/.test("
                           "document.getElementById('bulk-result').textContent)")
    db.expire_all()
    job = db.scalars(select(BulkJob).where(BulkJob.project_id == team.project_id)).one()
    assert job.status == "succeeded" and job.state["changed"] == 5
    assert all("checked-in-bulk" in fresh(db, sid).tags for sid in ids)
    assert page.js_errors == []


def test_preview_twice_then_save_creates_no_revision(browser, live_server, db, team, make_samples):
    from sqlalchemy import func, select

    from service.models import SampleRevision

    (sid,) = make_samples(team.project_id, 1)
    before = db.scalar(select(func.count()).select_from(SampleRevision).where(SampleRevision.sample_id == sid))
    page = login(browser, live_server, team.ann1.email)
    page.goto(f"/projects/{team.project_id}/review?sample={sid}")
    on_sample(page, sid)
    page.keyboard.press("p")
    page.keyboard.press("p")
    assert page.inner_text("#status-line") == ""       # not "Unsaved changes"
    page.keyboard.press("Control+s")
    page.wait_for_selector("#status-line:has-text('Nothing to save.')")
    db.expire_all()
    after = db.scalar(select(func.count()).select_from(SampleRevision).where(SampleRevision.sample_id == sid))
    assert (after, fresh(db, sid).version) == (before, 1)
    assert page.js_errors == []


def test_progress_page_agreement_column_shows_numbers(browser, live_server, client, db, team, make_samples):
    ids = make_samples(team.project_id, 2)
    client.put(f"/api/v1/projects/{team.project_id}/review/settings", headers=team.lead.headers,
               json={"review_overlap": 2})
    for actor in (team.ann1, team.ann2):
        for sid in ids:
            version = client.get(f"/api/v1/projects/{team.project_id}/samples/{sid}",
                                 headers=actor.headers).json()["version"]
            resp = client.post(f"/api/v1/projects/{team.project_id}/review/samples/{sid}/decision",
                               headers=actor.headers, json={"decision": "accepted", "version": version})
            assert resp.status_code == 200, resp.text
    page = login(browser, live_server, team.viewer.email)
    page.goto(f"/projects/{team.project_id}/review/dashboard")
    row = page.locator(f'[data-testid="throughput"] tr:has-text("{team.ann1.email}")')
    assert row.locator("td").last.inner_text() == "100% of 2"
    assert "built-in method" not in page.content()
    assert page.js_errors == []
