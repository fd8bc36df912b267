"""A version build with its freeze loop in several processes (``datasets.shard``) gives the
version a build in one process gives: the same items, statistics and leakage report; refused
samples from every part are named; a child that dies fails the build and leaves nothing."""
from __future__ import annotations

import pytest
from sqlalchemy import update

from service.core.config import get_settings
from service.datasets import build as datasets_build
from service.datasets import schemas, shard
from service.datasets import service as datasets_service
from service.models import DatasetVersion, DatasetVersionItem, Sample
from tests.conftest import PG_URL
from tests.datasets.test_service import build, conv, items, make_dataset, make_document, make_sample

pytestmark = pytest.mark.skipif(not PG_URL, reason="shards read through an exported PostgreSQL snapshot and write by COPY")


@pytest.fixture
def project(db, factories):
    return factories.make_project(db, factories.make_user(db))


@pytest.fixture
def shards(monkeypatch):
    """``set(k)``: builds from now on freeze in ``k`` processes, whatever their size; the
    children started are counted (the real ``shard.start``, wrapped)."""
    started: list[shard.Child] = []
    real = shard.start

    def counting(*args, **kwargs):
        child = real(*args, **kwargs)
        started.append(child)
        return child

    monkeypatch.setattr(shard, "start", counting)

    def set_shards(k: int) -> list[shard.Child]:
        monkeypatch.setenv("ANNOTUNE_BUILD_SHARDS", str(k))
        monkeypatch.setenv("ANNOTUNE_BUILD_SHARD_MIN", "1")
        get_settings.cache_clear()
        started.clear()
        return started

    yield set_shards
    monkeypatch.delenv("ANNOTUNE_BUILD_SHARDS")
    monkeypatch.delenv("ANNOTUNE_BUILD_SHARD_MIN")
    get_settings.cache_clear()


def _corpus(db, project, factories) -> None:
    """Samples of every kind the freeze loop treats differently, spread over the id range:
    system prompts, several turns, text needing the full gate (escapes), reasoning, tags,
    provenance, documents, reviewers, and near duplicates for the leakage check."""
    reviewer = factories.make_user(db)
    docs = [make_document(db, project) for _ in range(3)]
    base = ("The supplier shall deliver the goods to the buyer's warehouse no later than thirty "
            "days after the purchase order is signed, and bears the risk until delivery.")
    for i in range(90):
        if i % 3 == 0:
            messages = [{"role": "user", "content": f"{base} ({i})"},
                        {"role": "assistant", "content": f"Answer {i % 9}."}]
        elif i % 7 == 0:
            messages = [{"role": "user", "content": f"tab\there \\ quote \" nul-free \u2028 {i}"},
                        {"role": "assistant", "content": "\u00e9t\u00e9 \U0001f600"}]
        else:
            messages = conv(i, system=i % 4 == 1, turns=1 + i % 3)
        sample = make_sample(db, project, messages, tags=[f"t{i % 5}"], document=docs[i % 3],
                             provenance={"model": f"m{i % 2}", "template": "qa@1"},
                             reviewer=reviewer if i % 2 else None)
        if i % 11 == 0:
            sample.reasoning = f"Because clause {i} says so."
    db.flush()


def _snapshot(db, version):
    return ([(i.sample_id, i.split, i.position, i.messages, i.content_hash, i.revision_id,
              i.sample_version, i.document_id) for i in items(db, version.id)],
            version.counts, version.stats, version.leakage)


def test_sharded_build_equals_the_one_process_build(db, project, factories, shards, monkeypatch):
    monkeypatch.setattr(datasets_build, "COPY_BLOCKS", 1)  # a COPY statement per block
    _corpus(db, project, factories)
    dataset = make_dataset(db, project)
    spec = {"split": {"train": 0.5, "validation": 0.2, "test": 0.3}, "seed": 4,
            "reasoning": "think"}
    shards(1)
    one = build(db, dataset, **spec)
    assert one.status == "ready", one.error
    started = shards(3)
    three = build(db, dataset, **spec)
    assert three.status == "ready", three.error
    assert len(started) == 2 and all(c.proc.returncode == 0 for c in started)
    a, b = _snapshot(db, one), _snapshot(db, three)
    assert len(a[0]) == 90 and a[0] == b[0]
    assert a[1] == b[1]
    assert a[2] == b[2]
    assert a[3] == b[3] and a[2]["leakage"]["checked"] is True and a[3], "no leakage found"


def test_sharded_build_names_the_refused_samples_of_every_part(db, project, shards):
    made = [make_sample(db, project, conv(i)) for i in range(30)]
    bad = [made[2], made[16], made[28]]  # one in each of three parts
    for sample in bad:
        db.execute(update(Sample).where(Sample.id == sample.id).values(
            messages=[{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]))
    db.flush()
    started = shards(3)
    version = build(db, make_dataset(db, project))
    assert len(started) == 2
    assert version.status == "failed"
    assert version.stats["refused_total"] == 3
    assert [r["sample_id"] for r in version.stats["refused"]] == [s.id for s in bad]
    assert items(db, version.id) == []


def test_a_child_that_dies_fails_the_build_and_leaves_nothing(db, project, shards, monkeypatch):
    for i in range(40):
        make_sample(db, project, conv(i))
    shards(2)
    real = shard.start

    def killed(*args, **kwargs):  # the child is killed (say, by the OOM killer) as it starts
        child = real(*args, **kwargs)
        child.proc.kill()
        return child

    monkeypatch.setattr(shard, "start", killed)
    version = build(db, make_dataset(db, project))
    assert version.status == "failed"
    assert "ShardFailed" in version.error and "exited" in version.error
    assert items(db, version.id) == []


def test_a_failed_copy_fails_the_sharded_build_and_ends_its_child(db, project, shards):
    """An item already there for a sample of the child's half: the COPY fails on the unique
    key, the build fails with PostgreSQL's reason, its child is ended, nothing is written."""
    made = [make_sample(db, project, conv(i)) for i in range(40)]
    started = shards(2)
    version = datasets_service.create_version(db, dataset=make_dataset(db, project),
                                              spec=schemas.VersionCreate())
    db.add(DatasetVersionItem(version_id=version.id, sample_id=made[-1].id, sample_version=1,
                              split="train", position=10_000, messages=conv(0),
                              content_hash="0" * 64))
    db.commit()  # the build runs now (eager), next to the stray item
    db.expire_all()
    version = db.get(DatasetVersion, version.id)
    assert version.status == "failed"
    assert "uq_dataset_version_items_version_id_sample_id" in version.error
    assert len(started) == 1 and started[0].proc.returncode is not None
    assert [i.position for i in items(db, version.id)] == [10_000]  # only the stray one
