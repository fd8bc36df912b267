"""Project pages: every sub-page carries the tab bar, with only the tabs the caller may open."""
from __future__ import annotations

import re


def _tabs(html: str) -> list[str]:
    nav = re.search(r'<nav class="tabs" data-testid="project-tabs">(.*?)</nav>', html, re.DOTALL)
    assert nav, "no tab bar"
    return re.findall(r">([^<]+)</a>", nav.group(1))


def test_sub_pages_show_the_tabs_and_mark_the_current_one(client, db, factories):
    from service.models import User

    owner = factories.make_actor(db)
    annotator = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, owner.user_id))
    factories.add_member(db, project, db.get(User, annotator.user_id), "annotator")
    base = f"/projects/{project.id}"
    for path in ("/datasets", "/training", "/review/dashboard", "/members", "/documents"):
        html = client.get(base + path, headers=owner.headers).text
        assert "Review settings" in _tabs(html), path
        current = re.search(r'<a href="([^"]+)" aria-current="page">', html)
        assert current and current.group(1) == base + path, path
    tabs = _tabs(client.get(base + "/datasets", headers=annotator.headers).text)
    assert "Review" in tabs and "Samples" in tabs
    assert not {"Adjudication", "Import", "Review settings"} & set(tabs)  # they answer 403
