"""Real headless Chromium (the app's strict CSP: no inline scripts, no eval) against the live app:
an annotator decides 10 pairs by keyboard (one edited, one with a reason, a tie, both bad), a
second annotator disagrees on two, and a lead sees kappa and adjudicates by keyboard."""
# ruff: noqa: F811  (pytest fixtures imported from tests.support.browser)
from __future__ import annotations

from service.models import PreferenceDecision, PreferenceItem
from tests.support.browser import browser, login, needs_chromium  # noqa: F401  (fixture)

pytestmark = needs_chromium


def on_item(page, item_id: int) -> None:
    page.wait_for_selector(f'#pair[data-item="{item_id}"]')


def good_side(page) -> str:
    return "1" if "good" in page.inner_text('[data-testid="candidate-1"]') else "2"


def test_ten_pairs_by_keyboard_disagreement_adjudication_and_kappa(
        browser, live_server, client, db, team, make_pairs):
    pid = team.project_id
    client.put(f"/api/v1/projects/{pid}/review/settings", headers=team.lead.headers,
               json={"review_overlap": 2})
    ids = make_pairs(pid, 10)
    page = login(browser, live_server, team.ann1.email)
    page.goto(f"/projects/{pid}/preferences")
    on_item(page, ids[0])
    page.keyboard.press("?")
    page.wait_for_selector("#help:not([hidden])")
    page.keyboard.press("Escape")
    page.wait_for_selector("#help", state="hidden")
    for n, item_id in enumerate(ids):
        on_item(page, item_id)
        good = good_side(page)
        if n == 7:
            page.keyboard.press("t")
        elif n == 8:
            page.keyboard.press("b")
        else:
            page.keyboard.press(good)
        if n == 1:  # edit the preferred answer, then send from the editor
            page.keyboard.press("e")
            page.wait_for_selector("#edit-box:not([hidden])")
            page.keyboard.press("Control+End")
            page.keyboard.type(" Edited by keyboard.")
            page.keyboard.press("Control+Enter")
            continue
        if n == 2:  # a reason, sent with Enter from the reason field
            page.keyboard.press("r")
            page.keyboard.type("more specific")
        page.keyboard.press("Enter")
    page.wait_for_selector('[data-testid="pairs-empty"]')
    assert page.js_errors == []

    db.expire_all()
    mine = {d.item_id: d for d in db.query(PreferenceDecision).filter_by(annotator_id=team.ann1.user_id)}
    assert len(mine) == 10
    assert mine[ids[1]].edited_text == "Item 1 is a good answer. Edited by keyboard."
    assert mine[ids[2]].reason == "more specific"
    assert [mine[i].outcome for i in ids].count("preferred") == 8
    assert (mine[ids[7]].outcome, mine[ids[8]].outcome) == ("tie", "both_bad")

    # the second annotator (REST) agrees on eight, prefers the other answer on two
    for n, item_id in enumerate(ids):
        item = client.get(f"/api/v1/projects/{pid}/preference-items/{item_id}",
                          headers=team.lead.headers).json()
        good = next(c["id"] for c in item["candidates"] if "good" in c["content"])
        bad = next(c["id"] for c in item["candidates"] if c["id"] != good)
        if n == 7:
            body = {"outcome": "tie"}
        elif n == 8:
            body = {"outcome": "both_bad"}
        elif n in (4, 5):
            body = {"outcome": "preferred", "chosen_id": bad, "rejected_id": good}
        else:
            body = {"outcome": "preferred", "chosen_id": good, "rejected_id": bad}
        resp = client.post(f"/api/v1/projects/{pid}/preference-items/{item_id}/decision",
                           headers=team.ann2.headers, json=body)
        assert resp.status_code == 200, resp.text

    lead = login(browser, live_server, team.lead.email)
    lead.goto(f"/projects/{pid}/preferences/adjudicate")
    kappa = float(lead.inner_text('[data-testid="kappa"]'))
    agreement = client.get(f"/api/v1/projects/{pid}/preference-review/agreement",
                           headers=team.viewer.headers).json()
    assert abs(kappa - agreement["kappa"]) < 1e-3 and 0 < kappa < 1
    assert "80%" in lead.inner_text('[data-testid="agreement-pairs"]')
    links = lead.locator('[data-testid="disputed"] a')
    assert links.count() == 2
    links.first.click()
    on_item(lead, ids[4])
    assert lead.locator('[data-testid="decisions"] tbody tr').count() == 2
    lead.keyboard.press(good_side(lead))
    lead.keyboard.press("Enter")
    lead.wait_for_selector('[data-testid="disputed"] a')
    assert lead.locator('[data-testid="disputed"] a').count() == 1
    db.expire_all()
    item = db.get(PreferenceItem, ids[4])
    assert item.status == "adjudicated" and item.resolved_by_id == team.lead.user_id
    assert "good" in next(c for c in client.get(f"/api/v1/projects/{pid}/preference-items/{ids[4]}",
                                                 headers=team.lead.headers).json()["candidates"]
                          if c["id"] == item.chosen_id)["content"]
    assert lead.js_errors == []
