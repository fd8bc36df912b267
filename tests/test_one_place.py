"""What exists once: the lookup of a project's row (service/core/lookup.py), the hash of a
conversation (service/samples/store.py) and the check of one (service/samples/validation.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[1] / "service"


def _defs(name: str) -> list[str]:
    pattern = re.compile(rf"^def {name}\(", re.MULTILINE)
    return sorted(str(p.relative_to(SERVICE)) for p in SERVICE.rglob("*.py")
                  if pattern.search(p.read_text(encoding="utf-8")))


def test_one_definition_each():
    assert _defs("get_in_project") == ["core/lookup.py"]
    assert _defs("check_messages") == ["samples/validation.py"]
    # documents/dedup.py hashes a chunk's text (whitespace-folded), not a conversation
    assert _defs("content_hash") == ["documents/dedup.py", "samples/store.py"]
    from service.datasets import build
    from service.samples import service as samples_service
    from service.samples import store

    assert build.content_hash is store.content_hash is samples_service.content_hash


def test_no_copies_of_the_project_lookup():
    """``db.get`` then ``.project_id != project_id``: what get_in_project / in_project do
    (service/documents, another engineer's area for now, keeps its own)."""
    copies = []
    for path in SERVICE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"\.project_id != (project_id|access\.project\.id)", text):
            line = text.count("\n", 0, m.start()) + 1
            copies.append(f"{path.relative_to(SERVICE)}:{line}")
    assert copies == ["documents/service.py:79"], copies


def test_get_in_project(db, factories):
    from service.core.errors import NotFound
    from service.core.lookup import get_in_project, in_project
    from service.models import LLMProvider, Sample, User
    from service.samples import service as samples_service

    owner = db.get(User, factories.make_actor(db).user_id)
    mine = factories.make_project(db, owner, name="mine")
    theirs = factories.make_project(db, owner, name="theirs")
    sample = samples_service.create_sample(db, project_id=theirs.id, messages=[
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    builtin = LLMProvider(project_id=None, name="g", kind="local", model="m")
    db.add(builtin)
    db.flush()
    assert get_in_project(db, Sample, sample.id, project_id=theirs.id, what="sample",
                          code="sample_not_found") is sample
    for row_id in (sample.id, 10**12, None, True):
        assert in_project(db, Sample, row_id, project_id=mine.id) is None
    with pytest.raises(NotFound) as err:
        get_in_project(db, Sample, sample.id, project_id=mine.id, what="sample",
                       code="sample_not_found")
    assert err.value.code == "sample_not_found" and err.value.message == "sample not found"
    assert in_project(db, LLMProvider, builtin.id, project_id=mine.id) is None
    assert in_project(db, LLMProvider, builtin.id, project_id=mine.id, shared=True) is builtin


def test_check_messages_is_the_gate_for_every_caller():
    """The stricter check (the gate) for the API and for the formats' callers alike: an empty
    answer is refused, though its structure is sound."""
    from service.core.errors import Invalid
    from service.samples.formats import FormatError
    from service.samples.validation import SampleInvalid, check_messages

    good = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert check_messages(good) is good
    reordered = [{"content": "q", "role": "user"}, {"content": "a", "role": "assistant"}]
    assert check_messages(reordered) == good and list(check_messages(reordered)[0]) == ["role", "content"]
    empty = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]
    with pytest.raises(SampleInvalid) as err:
        check_messages(empty)
    assert isinstance(err.value, FormatError) and err.value.code == "empty_response"
    with pytest.raises(Invalid) as api:
        check_messages(empty, "body.messages")
    assert api.value.details[0]["field"] == "body.messages.1.content"
    nul = [{"role": "user", "content": "q\x00"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(SampleInvalid):
        check_messages(nul)
