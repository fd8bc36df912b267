"""The leakage report against a brute force over the same signatures: every reported pair is a
real near-duplicate with the right similarity, the best train match is the one reported, and
nothing clearly leaked is missed."""
from __future__ import annotations

import random

import numpy as np
import pytest

from service.core import minhash
from service.datasets import leakage
from tests.datasets.test_service import build, items, make_dataset, make_sample

WORDS = [f"term{i}" for i in range(300)] + ["付款", "合同", "交货"]


@pytest.fixture
def project(db, factories):
    owner = factories.make_user(db)
    return factories.make_project(db, owner)


def leaked_version(db, project, n: int = 160):
    rng = random.Random(5)
    bases = [" ".join(rng.choice(WORDS) for _ in range(30)) for _ in range(n // 4)]
    for i in range(n):
        base = bases[i % len(bases)]
        words = base.split()
        fraction = (0.0, 0.03, 0.1, 1.0)[i // len(bases)]  # copies, near copies, ..., unrelated
        text = " ".join(rng.choice(WORDS) if rng.random() < fraction else w for w in words)
        make_sample(db, project, [{"role": "system", "content": "ignored by the check"},
                                  {"role": "user", "content": text},
                                  {"role": "assistant", "content": "OK."}])
    return build(db, make_dataset(db, project), split={"train": 0.6, "validation": 0, "test": 0.4},
                 seed=4)


def brute_force(db, version_id: int) -> dict[int, tuple[float, int]]:
    rows = items(db, version_id)
    test = [r for r in rows if r.split == "test"]
    train = [r for r in rows if r.split == "train"]
    ts = leakage.signatures([leakage.leakage_text(r.messages) for r in test])
    tr = leakage.signatures([leakage.leakage_text(r.messages) for r in train])
    best: dict[int, tuple[float, int]] = {}
    for i, row in enumerate(test):
        sims = minhash.similarity(np.repeat(ts[i:i + 1], len(train), axis=0), tr)
        j = max(range(len(train)), key=lambda k: (sims[k], -train[k].sample_id))
        best[row.sample_id] = (round(float(sims[j]), 4), train[j].sample_id)
    return best


def test_report_matches_a_brute_force_over_the_signatures(db, project):
    version = leaked_version(db, project)
    assert version.stats["leakage"]["checked"] is True
    truth = brute_force(db, version.id)
    reported = {p["test_sample_id"]: (p["similarity"], p["train_sample_id"]) for p in version.leakage}
    assert reported, "planted copies were not found"
    for test_id, (sim, train_id) in reported.items():
        assert sim >= leakage.THRESHOLD
        assert truth[test_id] == (sim, train_id)
    clear = {t for t, (sim, _) in truth.items() if sim >= 0.95}
    assert clear and clear <= set(reported)
    assert version.stats["leakage"]["count"] == len(reported)
    assert [p["test_sample_id"] for p in version.leakage] == sorted(reported)


def test_check_gives_up_when_samples_are_too_alike(db, project):
    version = leaked_version(db, project, n=40)
    report, info = leakage.check(db, version.id, version.counts, max_candidates=1)
    assert report == [] and info["checked"] is False and "candidate pairs" in info["reason"]


def test_version_page_links_the_leaked_pairs(db, factories, client):
    from service.models import Dataset, User

    owner = factories.make_actor(db)
    project = factories.make_project(db, db.get(User, owner.user_id))
    version = leaked_version(db, project)
    pair = version.leakage[0]
    dataset = db.get(Dataset, version.dataset_id)
    page = client.get(f"/projects/{project.id}/datasets/{dataset.id}/versions/{version.id}",
                      headers=owner.headers)
    assert page.status_code == 200 and 'data-testid="leakage"' in page.text
    for sid in (pair["test_sample_id"], pair["train_sample_id"]):
        assert f'href="/projects/{project.id}/samples/{sid}"' in page.text


def test_report_made_while_freezing_equals_the_check_over_the_items(db, project):
    """The build computes the report as it freezes (``leakage.Collector``); read back from the
    frozen items, the same signatures give the same report and summary."""
    version = leaked_version(db, project)
    assert leakage.check(db, version.id, version.counts) == (version.leakage,
                                                             version.stats["leakage"])


def _reference_signature(text: str, num_perm: int = leakage.NUM_PERM, size: int = leakage.SHINGLE,
                         seed: int = leakage.SEED) -> list[int]:
    """One text's signature as the module docstring of ``core.minhash`` defines it, in plain
    Python integers: the vectorised batch code must give exactly this."""
    mask = 0xFFFFFFFF

    def fmix(h: int) -> int:
        h ^= h >> 16
        h = h * 0x85EBCA6B & mask
        h ^= h >> 13
        h = h * 0xC2B2AE35 & mask
        return h ^ (h >> 16)

    codes = [ord(c) for c in text]
    window = min(size, len(codes))
    shingles = []
    for start in range(max(len(codes) - size + 1, 1)):
        h = 0
        for c in codes[start:start + window]:
            h = (h * 1_000_003 + c) & mask
        shingles.append(fmix(h))
    a, b = (int(x[0]) for x in minhash.permutations(1, seed))
    bits = num_perm.bit_length() - 1
    bins: list[int | None] = [None] * num_perm
    for h in shingles:
        h = fmix((h * a + b) & mask)
        j, value = h >> (32 - bits), h & ((1 << (32 - bits)) - 1)
        bins[j] = value if bins[j] is None else min(bins[j], value)
    out = []
    for j in range(num_perm):
        d = next(d for d in range(num_perm) if bins[(j + d) % num_perm] is not None)
        out.append((bins[(j + d) % num_perm] + (0x9E3779B1 * d)) & mask)
    return out


@pytest.mark.nodb
def test_batch_signatures_equal_a_plain_python_reference():
    rng = random.Random(11)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(60)]
    texts += ["", "a", "abcd", "abcde", "付款合同", "😀 x 😀", "a" * 300]
    rng.shuffle(texts)
    sigs = leakage.signatures(texts)
    assert sigs.dtype == np.uint32 and sigs.shape == (len(texts), leakage.NUM_PERM)
    for text, sig in zip(texts, sigs, strict=True):
        assert sig.tolist() == _reference_signature(text), text
