"""Shared setup for review tests: a project with one member per role, and sample makers."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.support.live_server import live_server  # noqa: F401  (fixture)

XSS_USER = "<script>window.__xss=1</script> what is {{ 7*7 }}?"
XSS_ANSWER = '<img src=x onerror="window.__xss=2"> it is {{ 7*7 }} — see the manual'


@dataclass
class Team:
    project_id: int
    owner: object
    lead: object
    ann1: object
    ann2: object
    viewer: object


@pytest.fixture
def team(db, factories) -> Team:
    owner = factories.make_actor(db)
    lead = factories.make_actor(db)
    ann1 = factories.make_actor(db)
    ann2 = factories.make_actor(db)
    viewer = factories.make_actor(db)
    from service.models import User

    project = factories.make_project(db, db.get(User, owner.user_id), name="Review project")
    for actor, role in ((lead, "lead"), (ann1, "annotator"), (ann2, "annotator"), (viewer, "viewer")):
        factories.add_member(db, project, db.get(User, actor.user_id), role)
    return Team(project.id, owner, lead, ann1, ann2, viewer)


def qa(i: int, answer: str | None = None) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Question number {i}?"},
            {"role": "assistant", "content": answer or f"Answer number {i}."}]


@pytest.fixture
def make_samples(db):
    def make(project_id: int, n: int, **kwargs) -> list[int]:
        from service.samples import service as samples_service

        ids = []
        for i in range(n):
            s = samples_service.create_sample(db, project_id=project_id, messages=qa(i + 1), **kwargs)
            ids.append(s.id)
        db.commit()
        return ids

    return make


@pytest.fixture
def source_sample(db):
    """A sample drawn from a chunk whose text the answer quotes."""
    def make(project_id: int, *, chunk_text: str, messages: list[dict[str, str]]) -> int:
        from service.models import Chunk, Document
        from service.samples import service as samples_service

        doc = Document(project_id=project_id, filename="manual <v2>.pdf", sha256="0" * 64,
                       storage_path="/nonexistent", status="parsed")
        db.add(doc)
        db.flush()
        chunk = Chunk(project_id=project_id, document_id=doc.id, ordinal=3, text=chunk_text,
                      char_start=0, char_end=len(chunk_text), page_start=4, page_end=5,
                      heading_path=["Setup", "Install <fast>"], content_hash="1" * 64)
        db.add(chunk)
        db.flush()
        s = samples_service.create_sample(db, project_id=project_id, messages=messages,
                                          chunk_id=chunk.id, document_id=doc.id,
                                          scores={"judge": {"score": 4, "rationale": "grounded <b>ok</b>"}})
        db.commit()
        return s.id

    return make
