"""The built-in templates and provider are global rows made on first use: two first requests at
the same moment must not both make them (no unique constraint covers ``project_id`` NULL)."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from service.core.db import get_sessionmaker
from service.generation import prompts
from service.generation import service as generation
from service.models import PromptTemplate
from tests.conftest import PG_URL


def _global_templates(db) -> dict[str, int]:
    rows = db.execute(select(PromptTemplate.name, func.count()).where(
        PromptTemplate.project_id.is_(None)).group_by(PromptTemplate.name))
    return {name: n for name, n in rows}


@pytest.mark.skipif(not PG_URL, reason="SQLite has one writer at a time: no two first seedings")
def test_two_first_seedings_at_once_make_each_builtin_template_once():
    factory = get_sessionmaker()
    first, second = factory(), factory()
    try:
        generation.ensure_builtin_templates(first)  # inserted, not committed: holds the lock
        done = threading.Event()

        def other() -> None:
            generation.ensure_builtin_templates(second)  # waits for the first, then finds them
            second.commit()
            done.set()

        t = threading.Thread(target=other)
        t.start()
        assert not done.wait(0.5), "the second seeding did not wait for the first"
        first.commit()
        t.join(10)
        assert done.is_set()
    finally:
        first.close()
        second.close()
    with factory() as db:
        counts = _global_templates(db)
    assert counts == {d.name: 1 for d in prompts.list_defaults()}


def test_seeding_twice_in_turn_adds_nothing(db):
    generation.ensure_builtin_templates(db)
    db.commit()
    generation.ensure_builtin_templates(db)
    db.commit()
    assert _global_templates(db) == {d.name: 1 for d in prompts.list_defaults()}
