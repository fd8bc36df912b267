"""core.minhash: the signatures estimate Jaccard similarity, do not depend on the batch, and the
band index finds exactly the pairs that share a band."""
from __future__ import annotations

import random

import numpy as np
import pytest

from service.core import minhash

pytestmark = pytest.mark.nodb

WORDS = [f"w{i}x" for i in range(400)] + ["合同", "付款", "交货", "违约", "条款"]


def shingle_set(text: str, k: int = 5) -> set[str]:
    return {text[i:i + k] for i in range(len(text) - k + 1)} or {text}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def mutated(rng: random.Random, text: str, fraction: float) -> str:
    words = text.split()
    return " ".join(rng.choice(WORDS) if rng.random() < fraction else w for w in words)


def sig(texts: list[str]) -> np.ndarray:
    return minhash.signatures(texts, num_perm=64, size=5, seed=1)


@pytest.mark.parametrize("words", [2, 12, 150])
def test_equal_bins_estimate_jaccard(words):
    rng = random.Random(words)
    base = [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(300)]
    for fraction in (0.05, 0.3):
        other = [mutated(rng, t, fraction) for t in base]
        est = minhash.similarity(sig(base), sig(other))
        exact = np.array([jaccard(a, b) for a, b in zip(base, other)])
        assert abs(est.mean() - exact.mean()) < 0.03
        assert np.abs(est - exact).mean() < 0.06


def test_signatures_do_not_depend_on_the_batch_and_identical_texts_match():
    texts = ["", "ab", "abcde", "付款条件：三十天内", "x" * 3000, "the same text", "the same text"]
    together = sig(texts)
    alone = np.vstack([sig([t]) for t in texts])
    assert together.dtype == np.uint32 and together.shape == (len(texts), 64)
    assert (together == alone).all()
    assert (together[5] == together[6]).all()
    assert minhash.similarity(together[1:2], together[2:3])[0] < 0.5
    assert not (sig(texts) == minhash.signatures(texts, num_perm=64, size=5, seed=2)).all()


def test_num_perm_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        minhash.signatures(["abc"], num_perm=48, size=5, seed=1)


def test_band_index_candidates_are_exactly_the_pairs_sharing_a_band():
    rng = random.Random(3)
    base = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(120)]
    queries = [mutated(rng, t, rng.choice([0.0, 0.05, 0.2, 1.0])) for t in base[:80]]
    indexed, query = sig(base), sig(queries)
    index = minhash.BandIndex(indexed, 8, 8)
    q, i = index.candidates(query)
    got = set(zip(q.tolist(), i.tolist()))
    expected = {(a, b) for a in range(len(queries)) for b in range(len(base))
                if any((query[a, j * 8:(j + 1) * 8] == indexed[b, j * 8:(j + 1) * 8]).all()
                       for j in range(8))}
    assert got == expected
    assert len(got) == len(q)  # each pair once
    assert {(a, a) for a in range(80) if queries[a] == base[a]} <= got
