"""Datasets service: deterministic splits, the build, filters, leakage, immutability, diff."""
from __future__ import annotations

import hashlib
import itertools
from datetime import UTC

import numpy as np
import pytest
from sqlalchemy import select

from service.datasets import schemas
from service.datasets import service as datasets_service
from service.models import (
    Dataset,
    DatasetVersion,
    DatasetVersionItem,
    Document,
    Sample,
    SampleRevision,
)

_n = itertools.count(1)


# --- helpers shared by the dataset tests --------------------------------------------------------


def conv(i: int, *, system: bool = False, turns: int = 1, text: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": "Tu es un assistant juridique."}] if system else []
    for t in range(turns):
        msgs.append({"role": "user", "content": text or f"Question {i}.{t}: what does clause {i} say about «payment» 支付?"})
        msgs.append({"role": "assistant", "content": f"Answer {i}.{t}: clause {i} requires payment within {i % 30 + 1} days."})
    return msgs


def make_document(db, project, name: str | None = None) -> Document:
    name = name or f"doc{next(_n)}.txt"
    doc = Document(project_id=project.id, filename=name, sha256=hashlib.sha256(name.encode()).hexdigest(),
                   storage_path=f"/nowhere/{name}", status="parsed")
    db.add(doc)
    db.flush()
    return doc


def make_sample(db, project, messages, *, status: str = "accepted", tags=(), scores=None,
                document=None, provenance=None, reviewer=None) -> Sample:
    s = Sample(project_id=project.id, messages=messages, status=status, version=1,
               content_hash=hashlib.sha256(repr(messages).encode()).hexdigest(), tags=list(tags),
               scores=scores or {}, document_id=document.id if document else None,
               provenance=provenance or {}, reviewed_by_id=reviewer.id if reviewer else None)
    db.add(s)
    db.flush()
    db.add(SampleRevision(sample_id=s.id, version=1, action="create", messages_after=messages,
                          status_after=status))
    db.flush()
    return s


def edit_sample(db, sample: Sample, messages) -> None:
    before = sample.messages
    sample.messages = messages
    sample.version += 1
    db.add(SampleRevision(sample_id=sample.id, version=sample.version, action="edit",
                          messages_before=before, messages_after=messages,
                          status_before=sample.status, status_after=sample.status))
    db.flush()


def make_dataset(db, project, name: str = "contracts") -> Dataset:
    return datasets_service.create_dataset(db, project_id=project.id, name=name)


def build(db, dataset, **spec) -> DatasetVersion:
    """Create and build a version in-process (the eager task runs after commit)."""
    version = datasets_service.create_version(db, dataset=dataset,
                                              spec=schemas.VersionCreate(**spec))
    db.commit()
    db.expire_all()
    return db.get(DatasetVersion, version.id)


def items(db, version_id: int) -> list[DatasetVersionItem]:
    return list(db.scalars(select(DatasetVersionItem).where(DatasetVersionItem.version_id == version_id)
                           .order_by(DatasetVersionItem.split, DatasetVersionItem.position)))


@pytest.fixture
def project(db, factories):
    owner = factories.make_user(db)
    p = factories.make_project(db, owner)
    p.owner = owner
    return p


# --- split assignment (pure) --------------------------------------------------------------------


def test_target_counts_largest_remainder():
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert datasets_service.target_counts(10, ratios) == [8, 1, 1]
    assert datasets_service.target_counts(7, ratios) == [5, 1, 1]
    assert datasets_service.target_counts(0, ratios) == [0, 0, 0]
    assert datasets_service.target_counts(5, {"train": 1, "validation": 0, "test": 0}) == [5, 0, 0]
    for n in range(50):
        assert sum(datasets_service.target_counts(n, {"train": 0.7, "validation": 0.2, "test": 0.1})) == n


def test_split_is_a_pure_function_golden_values():
    """The expected split is written down here: the same on every machine and on both backends
    (it depends on sha256 of the seed and ids only, never on database ordering)."""
    ids = np.arange(1, 21, dtype=np.int64)
    docs = np.full(20, -1, dtype=np.int64)
    codes, pos = datasets_service.assign_splits(ids, docs, seed=7,
                                                ratios={"train": 0.6, "validation": 0.2, "test": 0.2})
    split = {int(i): (schemas.SPLITS[c], int(p)) for i, c, p in zip(ids, codes, pos)}
    assert [c for c in codes.tolist()].count(0) == 12
    assert [c for c in codes.tolist()].count(1) == 4
    # the order within the train split is the order of sha256(f"7:{id}")
    train = sorted((p, i) for i, (s, p) in split.items() if s == "train")
    keys = [hashlib.sha256(f"7:{i}".encode()).digest() for _, i in train]
    assert keys == sorted(keys)
    everything = sorted(split, key=lambda i: hashlib.sha256(f"7:{i}".encode()).digest())
    assert [i for _, i in train] == everything[:12]


def test_stratified_split_keeps_documents_whole_and_is_stable():
    rng = np.random.default_rng(0)
    ids = np.arange(1, 401, dtype=np.int64)
    docs = rng.integers(1, 41, size=400).astype(np.int64)
    docs[::17] = -1
    ratios = {"train": 0.7, "validation": 0.15, "test": 0.15}
    runs = [datasets_service.assign_splits(ids, docs, seed=3, ratios=ratios, stratify_by="document")
            for _ in range(3)]
    for codes, pos in runs[1:]:
        assert (codes == runs[0][0]).all() and (pos == runs[0][1]).all()
    codes, pos = runs[0]
    for d in set(docs.tolist()) - {-1}:
        assert len(set(codes[docs == d].tolist())) == 1, d
    counts = np.bincount(codes, minlength=3)
    assert abs(counts[0] - 280) <= 25 and counts[1] > 0 and counts[2] > 0
    for c in range(3):  # positions are 0..n-1 within each split
        assert sorted(pos[codes == c].tolist()) == list(range(int(counts[c])))
    other_seed, _ = datasets_service.assign_splits(ids, docs, seed=4, ratios=ratios,
                                                   stratify_by="document")
    assert (other_seed != codes).any()


# --- the build ----------------------------------------------------------------------------------


def test_build_freezes_samples_with_counts_stats_and_revisions(db, project):
    doc_a, doc_b = make_document(db, project), make_document(db, project)
    samples = [make_sample(db, project, conv(i, system=i % 2 == 0, turns=1 + i % 3),
                           tags=["law"] if i % 2 else ["tax"], document=doc_a if i < 12 else doc_b,
                           provenance={"model": "qwen3-8b", "template": {"name": "qa", "version": 2}},
                           reviewer=project.owner)
               for i in range(20)]
    make_sample(db, project, conv(99), status="pending")
    edit_sample(db, samples[0], conv(0, text="edited question"))
    dataset = make_dataset(db, project)
    version = build(db, dataset, split={"train": 0.8, "validation": 0.1, "test": 0.1}, seed=1)
    assert version.status == "ready", version.error
    assert version.number == 1 and version.built_at is not None
    assert version.counts == {"train": 16, "validation": 2, "test": 2, "total": 20}
    its = items(db, version.id)
    assert len(its) == 20 and {i.sample_id for i in its} == {s.id for s in samples}
    first = next(i for i in its if i.sample_id == samples[0].id)
    assert first.sample_version == 2 and first.messages[0]["content"] == "edited question"
    latest = db.scalar(select(SampleRevision.id).where(SampleRevision.sample_id == samples[0].id)
                       .order_by(SampleRevision.id.desc()).limit(1))
    assert first.revision_id == latest
    for split in schemas.SPLITS:
        pos = sorted(i.position for i in its if i.split == split)
        assert pos == list(range(len(pos)))
    stats = version.stats
    assert stats["tokens"]["all"]["count"] == 20 and stats["tokens"]["all"]["min"] > 0
    assert stats["turns"] == {"1": 7, "2": 7, "3": 6}
    assert stats["tags"] == {"law": 10, "tax": 10}
    assert stats["document_ids"] == sorted([doc_a.id, doc_b.id])
    assert stats["models"] == {"qwen3-8b": 20} and stats["templates"] == {"qa@2": 20}
    assert stats["reviewers"] == [project.owner.email]
    # the next version gets the next number
    v2 = build(db, dataset)
    assert v2.number == 2


def test_filters_status_tags_documents_scores_dates(db, project):
    from datetime import datetime, timedelta

    doc = make_document(db, project)
    now = datetime.now(UTC)
    s1 = make_sample(db, project, conv(1), tags=["a"], scores={"quality": 0.9}, document=doc)
    s2 = make_sample(db, project, conv(2), tags=["b"], scores={"quality": 0.5})
    s3 = make_sample(db, project, conv(3), tags=["a", "c"], scores={"quality": "high"})
    s4 = make_sample(db, project, conv(4), status="rejected", tags=["a"])
    s3.created_at = now - timedelta(days=10)
    db.flush()
    dataset = make_dataset(db, project)

    def chosen(**flt) -> set[int]:
        v = build(db, dataset, filter=flt, split={"train": 1, "validation": 0, "test": 0})
        assert v.status == "ready", v.error
        return {i.sample_id for i in items(db, v.id)}

    assert chosen() == {s1.id, s2.id, s3.id}
    assert chosen(status=["accepted", "rejected"]) == {s1.id, s2.id, s3.id, s4.id}
    assert chosen(tags=["a"]) == {s1.id, s3.id}
    assert chosen(tags=["c", "b"]) == {s2.id, s3.id}
    assert chosen(document_ids=[doc.id]) == {s1.id}
    assert chosen(score={"key": "quality", "min": 0.6}) == {s1.id}
    assert chosen(score={"key": "quality", "max": 0.9}) == {s1.id, s2.id}
    assert chosen(created_from=(now - timedelta(days=1)).isoformat()) == {s1.id, s2.id}
    assert chosen(created_to=(now - timedelta(days=5)).isoformat()) == {s3.id}


def test_same_split_across_runs_and_matches_the_pure_function(db, project):
    docs = [make_document(db, project) for _ in range(6)]
    samples = [make_sample(db, project, conv(i), document=docs[i % 6] if i % 5 else None)
               for i in range(60)]
    dataset = make_dataset(db, project)
    spec = {"split": {"train": 0.6, "validation": 0.2, "test": 0.2}, "seed": 42,
            "stratify_by": "document"}
    v1, v2 = build(db, dataset, **spec), build(db, dataset, **spec)
    a = [(i.sample_id, i.split, i.position) for i in items(db, v1.id)]
    b = [(i.sample_id, i.split, i.position) for i in items(db, v2.id)]
    assert a == b
    ids = np.array(sorted(s.id for s in samples), dtype=np.int64)
    by_id = {s.id: s for s in samples}
    doc_ids = np.array([by_id[i].document_id or -1 for i in ids.tolist()], dtype=np.int64)
    codes, pos = datasets_service.assign_splits(ids, doc_ids, seed=42, ratios=spec["split"],
                                                stratify_by="document")
    expected = sorted((int(i), schemas.SPLITS[c], int(p)) for i, c, p in zip(ids, codes, pos))
    assert sorted(a) == expected
    for d in docs:
        assert len({s for sid, s, _ in a if by_id[sid].document_id == d.id}) <= 1


def test_version_never_changes_after_samples_are_edited(db, project):
    samples = [make_sample(db, project, conv(i)) for i in range(10)]
    version = build(db, make_dataset(db, project), seed=5)
    before = [(i.sample_id, i.split, i.position, i.messages, i.content_hash) for i in items(db, version.id)]
    for s in samples[:5]:
        edit_sample(db, s, conv(100, text="changed after the build"))
    samples[5].status = "rejected"
    db.commit()
    # a second build run of a ready version is a no-op
    from service.datasets.jobs import BUILD
    from workers import jobs as kit

    assert kit.claim(BUILD, version.id) is None
    datasets_service.build_version(db, version.id)
    db.commit()
    db.expire_all()
    after = [(i.sample_id, i.split, i.position, i.messages, i.content_hash) for i in items(db, version.id)]
    assert after == before


def test_leakage_report_finds_near_duplicates_between_test_and_train(db, project):
    base = ("The supplier shall deliver the goods to the buyer's warehouse no later than thirty days "
            "after the purchase order is signed, and bears the risk until delivery.")
    for i in range(40):
        text = base if i < 20 else f"Unrelated question number {i} about topic {i * 7} and nothing else at all {i}"
        make_sample(db, project, [{"role": "user", "content": text + (f" ({i})" if i < 20 else "")},
                                  {"role": "assistant", "content": f"Answer {i % 20 if i < 20 else i}."}])
    version = build(db, make_dataset(db, project), split={"train": 0.5, "validation": 0, "test": 0.5},
                    seed=9)
    assert version.stats["leakage"]["checked"] is True
    assert version.leakage, "near-duplicates in test and train were not reported"
    split_of = {i.sample_id: i.split for i in items(db, version.id)}
    for pair in version.leakage:
        assert split_of[pair["test_sample_id"]] == "test"
        assert split_of[pair["train_sample_id"]] == "train"
        assert pair["similarity"] >= 0.8
    assert version.stats["leakage"]["count"] == len(version.leakage)


def test_leakage_skipped_above_the_limit(db, project):
    for i in range(6):
        make_sample(db, project, conv(i))
    dataset = make_dataset(db, project)
    version = datasets_service.create_version(db, dataset=dataset, spec=schemas.VersionCreate(
        split={"train": 0.5, "validation": 0, "test": 0.5}))
    version.status = "building"
    db.flush()
    datasets_service.build_version(db, version.id, leakage_max=3)
    assert version.stats["leakage"]["checked"] is False and version.leakage == []


def test_failed_build_records_the_error(db, project, monkeypatch):
    make_sample(db, project, conv(1))
    dataset = make_dataset(db, project)

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(datasets_service, "build_version", boom)
    version = build(db, dataset)
    assert version.status == "failed" and "disk on fire" in version.error


def test_empty_selection_builds_an_empty_version(db, project):
    version = build(db, make_dataset(db, project))
    assert version.status == "ready"
    assert version.counts == {"train": 0, "validation": 0, "test": 0, "total": 0}


def test_diff_added_removed_changed_and_moved(db, project):
    samples = [make_sample(db, project, conv(i)) for i in range(12)]
    dataset = make_dataset(db, project)
    v1 = build(db, dataset, seed=1)
    edit_sample(db, samples[0], conv(0, text="a better question"))
    samples[1].status = "rejected"
    new = make_sample(db, project, conv(50))
    db.commit()
    v2 = build(db, dataset, seed=2)
    diff = datasets_service.diff_versions(db, a=v1, b=v2)
    assert diff["summary"]["added"] == 1 and diff["added"][0]["sample_id"] == new.id
    assert diff["summary"]["removed"] == 1 and diff["removed"][0]["sample_id"] == samples[1].id
    assert diff["summary"]["changed"] == 1
    change = diff["changed"][0]
    assert change["sample_id"] == samples[0].id
    assert "-Question 0.0" in change["diff"] and "+a better question" in change["diff"]
    assert change["sample_version_a"] == 1 and change["sample_version_b"] == 2
    split1 = {i.sample_id: i.split for i in items(db, v1.id)}
    split2 = {i.sample_id: i.split for i in items(db, v2.id)}
    moved = {sid for sid in split1.keys() & split2.keys() if split1[sid] != split2[sid]}
    assert {m["sample_id"] for m in diff["split_changes"]} == moved
    assert diff["summary"]["split_changes"] == len(moved)
