"""Near-duplicate leakage between a version's test and train splits.

For every test sample whose text nearly matches a train sample (estimated Jaccard similarity of
character 5-gram shingles >= 0.8) the report names the closest train sample (ties: the lowest
train sample id). Signatures are one-permutation MinHash with 64 bins (``core.minhash``), test
signatures are indexed by LSH bands and every train sample is looked up as it streams by, in
batches; each candidate pair is confirmed on the full signatures.

Banding: 8 bands of 8 values. The chance that a pair of similarity ``s`` becomes a candidate is
``1 - (1 - s^8)^8``: 0.77 at 0.8, 0.93 at 0.85, 0.99 at 0.9, while an unrelated pair at 0.3 is
checked with a chance of 5e-5. Datasets whose samples are all alike (templated prompts over a
small vocabulary) could still produce an enormous number of candidates, so the check stops with
``checked: false`` once ``max_candidates`` pairs have been examined, rather than running for hours.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core import minhash
from service.models import DatasetVersionItem

THRESHOLD = 0.8
NUM_PERM = 64
SHINGLE = 5
BANDS, ROWS = 8, 8
SEED = 1
#: above this many train + test samples the check is skipped (the whole check, reading included,
#: took ~72 s for 810,000 samples on one core: docs/benchmarks.md)
MAX_SAMPLES = 2_000_000
#: candidate pairs examined before giving up (samples too alike for banding to help)
MAX_CANDIDATES = 200_000_000
REPORT_MAX = 1000
BATCH = 5000


def leakage_text(messages: list[dict[str, str]]) -> str:
    """The text compared for leakage: user and assistant contents, lower-cased, spaces collapsed."""
    return " ".join(" ".join(m["content"] for m in messages if m["role"] != "system").lower().split())


def signatures(texts: list[str]) -> np.ndarray:
    return minhash.signatures(texts, num_perm=NUM_PERM, size=SHINGLE, seed=SEED)


def _batches(db: Session, version_id: int, split: str, batch: int
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(sample_ids, signatures)`` of one split, ``batch`` items at a time."""
    stmt = (select(DatasetVersionItem.sample_id, DatasetVersionItem.messages)
            .where(DatasetVersionItem.version_id == version_id, DatasetVersionItem.split == split)
            .order_by(DatasetVersionItem.position))
    result = db.execute(stmt, execution_options={"yield_per": batch, "stream_results": True})
    try:
        for rows in result.partitions():
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, signatures([leakage_text(r[1]) for r in rows])
    finally:
        result.close()


def info() -> dict[str, Any]:
    return {"method": f"minhash-oph{NUM_PERM}-lsh{BANDS}x{ROWS} char{SHINGLE}-shingles",
            "threshold": THRESHOLD, "num_perm": NUM_PERM}


def check(db: Session, version_id: int, counts: dict[str, int], *, max_samples: int = MAX_SAMPLES,
          max_candidates: int = MAX_CANDIDATES, batch: int = BATCH
          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The leakage report (at most ``REPORT_MAX`` pairs, by test sample id) and its summary."""
    meta = info()
    if not counts.get("test") or not counts.get("train"):
        return [], {**meta, "checked": True, "count": 0}
    if counts["test"] + counts["train"] > max_samples:
        return [], {**meta, "checked": False, "count": None,
                    "reason": f"more than {max_samples} train + test samples"}
    test_ids = np.zeros(counts["test"], dtype=np.int64)
    test_sigs = np.zeros((counts["test"], NUM_PERM), dtype=np.uint32)
    filled = 0
    for ids, sigs in _batches(db, version_id, "test", batch):
        test_ids[filled:filled + len(ids)] = ids
        test_sigs[filled:filled + len(ids)] = sigs
        filled += len(ids)
    test_ids, test_sigs = test_ids[:filled], test_sigs[:filled]
    index = minhash.BandIndex(test_sigs, BANDS, ROWS)
    best_sim = np.full(len(test_ids), -1.0)
    best_train = np.zeros(len(test_ids), dtype=np.int64)
    examined = 0
    for train_ids, train_sigs in _batches(db, version_id, "train", batch):
        q, t = index.candidates(train_sigs)
        examined += len(q)
        if examined > max_candidates:
            return [], {**meta, "checked": False, "count": None,
                        "reason": f"more than {max_candidates} candidate pairs: the samples are "
                                  "too alike for the near-duplicate index"}
        if not len(q):
            continue
        sim = minhash.similarity(train_sigs[q], index.sigs[t])
        ok = sim >= THRESHOLD
        _keep_best(best_sim, best_train, t[ok], sim[ok], train_ids[q[ok]])
    leaked = np.flatnonzero(best_sim >= 0)
    order = leaked[np.argsort(test_ids[leaked], kind="stable")]
    report = [{"test_sample_id": int(test_ids[i]), "train_sample_id": int(best_train[i]),
               "similarity": round(float(best_sim[i]), 4)} for i in order[:REPORT_MAX]]
    return report, {**meta, "checked": True, "count": len(leaked)}


def _keep_best(best_sim: np.ndarray, best_train: np.ndarray, test_rows: np.ndarray,
               sims: np.ndarray, train_ids: np.ndarray) -> None:
    """Per test row: the highest similarity, then the lowest train sample id."""
    if not len(test_rows):
        return
    order = np.lexsort((train_ids, -sims, test_rows))  # by row, best first
    rows, first = np.unique(test_rows[order], return_index=True)
    cand_sim, cand_train = sims[order][first], train_ids[order][first]
    better = (cand_sim > best_sim[rows]) | ((cand_sim == best_sim[rows])
                                             & (cand_train < best_train[rows]))
    best_sim[rows[better]] = cand_sim[better]
    best_train[rows[better]] = cand_train[better]
