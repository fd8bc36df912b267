"""Shared setup for preference tests: a team (owner, lead, two annotators, viewer) and items."""
from __future__ import annotations

import pytest

from tests.review.conftest import Team, team  # noqa: F401  (fixture)
from tests.support.live_server import live_server  # noqa: F401  (fixture)


def pair_items(db, project_id: int, n: int, *, system: bool = False) -> list[int]:
    """``n`` comparison items with two candidates each (the first the better one)."""
    from service.preferences import service as preferences_service

    ids = []
    for i in range(n):
        prompt = ([{"role": "system", "content": "Answer briefly."}] if system else []) + [
            {"role": "user", "content": f"What is item {i}?"}]
        item = preferences_service.create_item(
            db, project_id=project_id, prompt=prompt,
            candidates=[{"content": f"Item {i} is a good answer.", "provenance": {"model": "m-a"}},
                        {"content": f"dunno {i}", "provenance": {"model": "m-b"}}])
        ids.append(item.id)
    db.commit()
    return ids


@pytest.fixture
def make_pairs(db):
    return lambda project_id, n, **kw: pair_items(db, project_id, n, **kw)
