"""Server-rendered review, samples, history, import and dashboard pages (no browser)."""
from __future__ import annotations

import re

from service.samples import service as samples_service
from tests.review.conftest import XSS_ANSWER, XSS_USER


def page(client, t, actor, path: str, **kw):
    return client.get(f"/projects/{t.project_id}{path}", headers=actor.headers, **kw)


def test_review_page_shows_source_with_quotes_highlighted(client, team, source_sample):
    chunk = "Intro text. To install, run the setup wizard and choose Full mode. Other details."
    sid = source_sample(team.project_id, chunk_text=chunk,
                        messages=[{"role": "user", "content": "How to install?"},
                                  {"role": "assistant", "content": "Run the setup wizard and choose Full mode."}])
    html = page(client, team, team.ann1, "/review").text
    assert f'data-sample="{sid}"' in html
    assert '<mark class="quote">un the setup wizard and choose Full mode.</mark>' in html
    assert "manual &lt;v2&gt;.pdf" in html and "p. 4–5" in html and "Install &lt;fast&gt;" in html
    assert "grounded &lt;b&gt;ok&lt;/b&gt;" in html  # judge rationale, escaped


def test_xss_is_escaped_everywhere(client, db, team, source_sample):
    sid = source_sample(team.project_id, chunk_text=f"Manual: {XSS_ANSWER} (end)",
                        messages=[{"role": "user", "content": XSS_USER},
                                  {"role": "assistant", "content": XSS_ANSWER}])
    samples_service.update_sample(db, project_id=team.project_id, sample_id=sid, expected_version=1,
                                  actor_id=team.ann1.user_id, tags=["<b>t</b>"],
                                  messages=[{"role": "user", "content": XSS_USER},
                                            {"role": "assistant", "content": XSS_ANSWER + " <script>x()</script>"}])
    db.commit()
    for path in ("/review", f"/review?sample={sid}", "/samples", f"/samples/{sid}"):
        html = page(client, team, team.lead, path).text
        assert "<script>window.__xss" not in html, path
        assert '<img src=x' not in html, path
        assert "<b>t</b>" not in html, path
        assert "{{ 7*7 }}" in html, path  # shown literally (not evaluated as a template)
    review_html = page(client, team, team.lead, "/review").text
    # the JSON island escapes <, > and & so it can't close the script element
    island = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', review_html, re.DOTALL).group(1)
    assert "<" not in island and "\\u003cscript\\u003e" in island
    history = page(client, team, team.lead, f"/samples/{sid}").text
    assert "&lt;script&gt;x()&lt;/script&gt;" in history and 'class="d-add"' in history


def test_samples_list_filters_and_keyset_pages(client, db, team, make_samples):
    ids = make_samples(team.project_id, 60)
    samples_service.update_sample(db, project_id=team.project_id, sample_id=ids[5], expected_version=1,
                                  actor_id=team.ann1.user_id, status="accepted", tags=["gold"])
    db.commit()
    first = page(client, team, team.viewer, "/samples").text
    assert first.count('class="row-select"') == 0  # viewers get no bulk controls
    rows = re.findall(r'<tr data-id="(\d+)">', first)
    assert len(rows) == 50 and rows[0] == str(ids[-1])  # newest first
    nxt = re.search(r'data-testid="next-page" href="\?([^"]+)"', first).group(1).replace("&amp;", "&")
    second = re.findall(r'<tr data-id="(\d+)">', page(client, team, team.viewer, f"/samples?{nxt}").text)
    assert len(second) == 10 and set(second).isdisjoint(rows)
    accepted = re.findall(r'<tr data-id="(\d+)">', page(client, team, team.viewer, "/samples?status=accepted").text)
    assert accepted == [str(ids[5])]
    assert re.findall(r'<tr data-id="(\d+)">', page(client, team, team.viewer, "/samples?tag=gold&q=").text) == [str(ids[5])]
    found = re.findall(r'<tr data-id="(\d+)">', page(client, team, team.viewer, "/samples?q=number+42%3F&order=asc").text)
    assert found == [str(ids[41])]
    assert 'class="row-select"' in page(client, team, team.lead, "/samples").text


def test_review_page_roles_and_empty_queue(client, team):
    assert page(client, team, team.viewer, "/review").status_code == 403
    empty = page(client, team, team.ann1, "/review")
    assert empty.status_code == 200 and 'data-testid="queue-empty"' in empty.text
    assert page(client, team, team.ann1, "/review/adjudicate").status_code == 403
    assert page(client, team, team.lead, "/review/adjudicate").status_code == 200
    assert page(client, team, team.viewer, "/review/dashboard").status_code == 200
    assert page(client, team, team.ann1, "/imports/new").status_code == 403


def test_dashboard_and_project_stats(client, db, team, make_samples):
    ids = make_samples(team.project_id, 4)
    client.put(f"/api/v1/projects/{team.project_id}/review/settings", headers=team.lead.headers,
               json={"target_accepted": 4})
    for sid in ids[:2]:
        client.post(f"/api/v1/projects/{team.project_id}/review/samples/{sid}/decision",
                    headers=team.ann1.headers, json={"decision": "accepted", "version": 1})
    dash = page(client, team, team.viewer, "/review/dashboard").text
    assert "2 accepted of a target of 4 (50%)" in dash and 'aria-valuenow="50"' in dash
    assert team.ann1.email in dash
    project = client.get(f"/projects/{team.project_id}", headers=team.viewer.headers).text
    assert "accepted of target" in project and "2 / 4 (50%)" in project
    assert f'/projects/{team.project_id}/review"' not in project  # the queue is for annotators up
    assert f'/projects/{team.project_id}/review/dashboard"' in project
    annotator = client.get(f"/projects/{team.project_id}", headers=team.ann1.headers).text
    assert f'/projects/{team.project_id}/review"' in annotator
    assert f'/projects/{team.project_id}/review/settings"' not in annotator  # leads only


def test_settings_form_roundtrip(client, db, factories, team):
    csrf = factories.browser_login(client, team.lead.email)
    resp = client.post(f"/projects/{team.project_id}/review/settings", follow_redirects=False,
                       data={"csrf_token": csrf, "reject_reasons": "wrong\nrude\n", "target_accepted": "100",
                             "review_overlap": "2"})
    assert resp.status_code == 303
    got = client.get(f"/api/v1/projects/{team.project_id}/review/settings", headers=team.lead.headers).json()
    assert got == {"reject_reasons": ["wrong", "rude"], "target_accepted": 100, "review_overlap": 2}
    no_csrf = client.post(f"/projects/{team.project_id}/review/settings", data={"review_overlap": "1"})
    assert no_csrf.status_code == 403


def test_import_page_strict_and_skip(client, factories, team):
    csrf = factories.browser_login(client, team.lead.email)
    good = b'{"instruction": "Say hi", "output": "hi"}\n'
    bad = good + b'{"foo": 1}\nnot json\n'
    resp = client.post(f"/projects/{team.project_id}/imports/new", follow_redirects=False,
                       data={"csrf_token": csrf, "format": "alpaca", "mode": "skip", "mapping": ""},
                       files={"file": ("data.jsonl", bad, "application/json")})
    assert resp.status_code == 303, resp.text
    detail = client.get(resp.headers["location"]).text
    assert 'data-testid="job-status">succeeded' in detail
    assert "imported 1" in detail and "skipped 2" in detail
    assert re.search(r"<tr><td>3</td>", detail)  # the per-line report names line 3
    strict = client.post(f"/projects/{team.project_id}/imports/new", follow_redirects=True,
                         data={"csrf_token": csrf, "format": "", "mode": "strict"},
                         files={"file": ("data.jsonl", bad, "application/json")})
    assert 'data-testid="job-status">rejected' in strict.text
    mapped = client.post(f"/projects/{team.project_id}/imports/new", follow_redirects=True,
                         data={"csrf_token": csrf, "mode": "strict",
                               "mapping": '{"user": "q", "assistant": "a"}'},
                         files={"file": ("d.csv", b"q,a\nWhat?,That.\n", "text/csv")})
    assert 'data-testid="job-status">succeeded' in mapped.text and "imported 1" in mapped.text
    bad_map = client.post(f"/projects/{team.project_id}/imports/new",
                          data={"csrf_token": csrf, "mode": "strict", "mapping": "{nope"},
                          files={"file": ("d.csv", b"q,a\n", "text/csv")})
    assert bad_map.status_code == 422 and "mapping is not valid JSON" in bad_map.text
    listing = client.get(f"/projects/{team.project_id}/imports/new").text
    assert listing.count("data.jsonl") == 2


def test_adjudication_pages_list_and_detail(client, team, make_samples):
    client.put(f"/api/v1/projects/{team.project_id}/review/settings", headers=team.lead.headers,
               json={"review_overlap": 2})
    (sid,) = make_samples(team.project_id, 1)
    base = f"/api/v1/projects/{team.project_id}/review/samples/{sid}/decision"
    client.post(base, headers=team.ann1.headers, json={"decision": "accepted", "version": 1})
    client.post(base, headers=team.ann2.headers, json={"decision": "rejected", "version": 1,
                                                        "reason": "<script>alert(1)</script>"})
    listing = page(client, team, team.lead, "/review/adjudicate").text
    assert f'href="?sample={sid}"' in listing
    detail = page(client, team, team.lead, f"/review/adjudicate?sample={sid}").text
    island = re.search(r'id="adjudicate-data">(.*?)</script>', detail, re.DOTALL).group(1)
    assert "<" not in island and team.ann2.email in island and "\\u003cscript\\u003e" in island
