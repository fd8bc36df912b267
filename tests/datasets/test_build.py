"""The batched freeze pass (service/datasets/build.py) against the per-sample rules it replaces:
token counts equal the tokenizer's regex, the gate's fast path never lets through what the
gate refuses, and a build still refuses (and names) every sample the gate refuses."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from service.datasets import build as datasets_build
from service.datasets import tokencount
from service.datasets.freeze import frozen_messages
from service.models import Sample, SampleRevision
from service.samples.tokens import SimpleTokenizer
from tests.datasets.test_service import build, conv, items, make_dataset, make_sample

_any_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60)


@pytest.mark.nodb
@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.one_of(_any_text, st.sampled_from(
    ["Hello, 世界!", "a_b  c\n", "😀x y😀z", "İstanbul ça va? 付款。", "\u3000\u30fb\uff01", ""])),
    max_size=12), block=st.integers(1, 5))
def test_simple_counts_equal_the_tokenizer(texts, block):
    tok = SimpleTokenizer()
    assert tokencount.simple_counts(texts, block).tolist() == [tok.count(t) for t in texts]


_role = st.sampled_from(["system", "user", "assistant", "tool", None])
_content = st.one_of(st.sampled_from(["hi", " ", "", "ok\n", "x\x00y"]), st.none(), st.integers(),
                     _any_text)


@st.composite
def _message(draw):
    msg = {}
    if draw(st.integers(0, 9)):
        msg["role"] = draw(_role)
    if draw(st.integers(0, 9)):
        msg["content"] = draw(_content)
    if not draw(st.integers(0, 9)):
        msg["name"] = "extra"
    return msg if draw(st.integers(0, 19)) else "not a message"


@pytest.mark.nodb
@settings(max_examples=400, deadline=None)
@given(messages=st.one_of(st.lists(_message(), max_size=6), st.none(), st.just({"role": "user"})))
def test_fast_path_never_passes_what_the_gate_refuses(messages):
    # the build takes the fast path only for stored JSON text without \\u escapes (no NUL, no
    # lone surrogate: the gate's text checks); the same precondition here
    if "\\u" in json.dumps(messages, ensure_ascii=False):
        return
    plain = datasets_build._plain(messages)
    if plain is not None:
        assert frozen_messages(messages) == (plain, None)


@pytest.mark.nodb
@settings(max_examples=100, deadline=None)
@given(i=st.integers(0, 10_000), system=st.booleans(), turns=st.integers(1, 3))
def test_fast_path_takes_canonical_conversations(i, system, turns):
    messages = conv(i, system=system, turns=turns)
    assert datasets_build._plain(messages) == frozen_messages(messages)[0]


@pytest.fixture
def project(db, factories):
    owner = factories.make_user(db)
    return factories.make_project(db, owner)


def test_build_refuses_every_sample_the_gate_refuses(db, project):
    """Samples changed behind the store's back (a bulk UPDATE) are named, in sample id order,
    and nothing is frozen."""
    for i in range(4):
        make_sample(db, project, conv(i))
    bad = [make_sample(db, project, conv(i)) for i in range(10, 13)]
    broken = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}],
              [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}],
              [{"role": "user", "content": "q", "name": "x"}, {"role": "assistant", "content": "a"}]]
    for sample, messages in zip(bad, broken, strict=True):
        db.execute(update(Sample).where(Sample.id == sample.id).values(messages=messages))
    db.flush()
    version = build(db, make_dataset(db, project))
    assert version.status == "failed"
    assert version.stats["refused_total"] == 3
    refused = version.stats["refused"]
    assert [r["sample_id"] for r in refused] == [s.id for s in bad]
    assert [r["code"] for r in refused] == [frozen_messages(m)[1].code for m in broken]
    assert f"{len(bad)} sample(s)" in version.error and items(db, version.id) == []


def test_a_version_is_its_own_copy_when_a_sample_row_is_removed(db, project):
    """Items refer to their samples and revisions by id only (migration 0022: no foreign key
    to check and lock per item in a build's COPY): a sample removed by hand leaves the version
    whole, frozen text and all."""
    samples = [make_sample(db, project, conv(i)) for i in range(6)]
    version = build(db, make_dataset(db, project))
    assert version.status == "ready", version.error
    before = [(i.sample_id, i.split, i.position, i.messages) for i in items(db, version.id)]
    gone = samples[3]
    db.execute(delete(SampleRevision).where(SampleRevision.sample_id == gone.id))
    db.execute(delete(Sample).where(Sample.id == gone.id))
    db.commit()
    db.expire_all()
    after = [(i.sample_id, i.split, i.position, i.messages) for i in items(db, version.id)]
    assert after == before and gone.id in {row[0] for row in after}
