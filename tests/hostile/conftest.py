"""A project with a lead, two annotators and a viewer, for the hostile-input tests."""
from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class Crew:
    project_id: int
    lead: object
    ann1: object
    ann2: object
    outsider: object

    def url(self, path: str = "") -> str:
        return f"/api/v1/projects/{self.project_id}{path}"


@pytest.fixture
def crew(db, factories) -> Crew:
    from service.models import User

    lead, ann1, ann2, outsider = (factories.make_actor(db) for _ in range(4))
    project = factories.make_project(db, db.get(User, lead.user_id), name="Hostile")
    for actor in (ann1, ann2):
        factories.add_member(db, project, db.get(User, actor.user_id), "annotator")
    return Crew(project.id, lead, ann1, ann2, outsider)


def qa(i: int = 1) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]


@pytest.fixture
def sample_id(db, crew) -> int:
    from service.samples import service as samples_service

    sid = samples_service.create_sample(db, project_id=crew.project_id, messages=qa()).id
    db.commit()
    return sid
