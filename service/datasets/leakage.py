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

import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core import minhash
from service.datasets.schemas import SPLITS
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
    """The text compared for leakage: user and assistant contents, lower-cased, spaces collapsed.

    The split and join are skipped when they would change nothing (no white space but single
    inner spaces: ``isprintable`` is false for every other white space character), which is
    most single-line text and halves the cost."""
    low = " ".join([m["content"] for m in messages if m["role"] != "system"]).lower()
    if low.isprintable() and "  " not in low and low[:1] != " " and low[-1:] != " ":
        return low
    return " ".join(low.split())


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


def _skipped(counts: dict[str, int], max_samples: int
             ) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
    """The result when there is nothing to check or too much, else None."""
    meta = info()
    if not counts.get("test") or not counts.get("train"):
        return [], {**meta, "checked": True, "count": 0}
    if counts["test"] + counts["train"] > max_samples:
        return [], {**meta, "checked": False, "count": None,
                    "reason": f"more than {max_samples} train + test samples"}
    return None


def check(db: Session, version_id: int, counts: dict[str, int], *, max_samples: int = MAX_SAMPLES,
          max_candidates: int = MAX_CANDIDATES, batch: int = BATCH
          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The leakage report (at most ``REPORT_MAX`` pairs, by test sample id) and its summary,
    from a built version's items (a build computes the same while it freezes: ``Collector``)."""
    skipped = _skipped(counts, max_samples)
    if skipped is not None:
        return skipped
    test_ids = np.zeros(counts["test"], dtype=np.int64)
    test_sigs = np.zeros((counts["test"], NUM_PERM), dtype=np.uint32)
    filled = 0
    for ids, sigs in _batches(db, version_id, "test", batch):
        test_ids[filled:filled + len(ids)] = ids
        test_sigs[filled:filled + len(ids)] = sigs
        filled += len(ids)
    return match(test_ids[:filled], test_sigs[:filled], _batches(db, version_id, "train", batch),
                 max_candidates)


def match(test_ids: np.ndarray, test_sigs: np.ndarray,
          train: Iterable[tuple[np.ndarray, np.ndarray]], max_candidates: int = MAX_CANDIDATES
          ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Index the test signatures by bands, look every batch of ``train`` (ids, signatures) up
    and keep, per test sample, the closest train sample at or above the threshold."""
    meta = info()
    index = minhash.BandIndex(test_sigs, BANDS, ROWS)
    best_sim = np.full(len(test_ids), -1.0)
    best_train = np.zeros(len(test_ids), dtype=np.int64)
    examined = 0
    for train_ids, train_sigs in train:
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


_TRAIN_RECORD = np.dtype([("id", "<i8"), ("sig", "<u4", (NUM_PERM,))])


class Collector:
    """The leakage check of a build, fed while it freezes (no second read of the items).

    ``add`` the frozen messages of every sample, ``flush`` after each batch (signatures of the
    batch's texts in one call), ``finish`` with the final counts. Test signatures are kept in
    memory (256 bytes a sample: 23 MB for 90,000); train ids and signatures go to a temporary
    file and are read back ``BATCH`` at a time for the lookup, so memory stays flat whatever the
    size of the train split. Same signatures and matching as ``check``: the same report.
    """

    def __init__(self, planned: dict[str, int], *, max_samples: int = MAX_SAMPLES,
                 max_candidates: int = MAX_CANDIDATES) -> None:
        self.active = _skipped(planned, max_samples) is None
        self.max_samples, self.max_candidates = max_samples, max_candidates
        self._pending: dict[str, tuple[list[int], list[str]]] = {"test": ([], []),
                                                                 "train": ([], [])}
        self._test: list[tuple[np.ndarray, np.ndarray]] = []
        self._train: BinaryIO | None = None

    def add(self, split: str, sample_id: int, messages: list[dict[str, str]]) -> None:
        pending = self._pending.get(split)
        if self.active and pending is not None:
            pending[0].append(sample_id)
            pending[1].append(leakage_text(messages))

    def pending(self) -> list[tuple[list[int], list[str]] | None]:
        """Per split code (``SPLITS`` order), the ``(ids, texts)`` lists ``add`` appends to
        until the next ``take``, or None where nothing is collected: a build's loop appends
        to them itself."""
        return [self._pending.get(s) if self.active else None for s in SPLITS]

    def take(self) -> dict[str, tuple[list[int], list[str]]]:
        """The samples added since the last ``take``, for ``absorb`` (in another thread)."""
        taken, self._pending = self._pending, {"test": ([], []), "train": ([], [])}
        return taken

    def flush(self) -> None:
        self.absorb(self.take())

    def absorb(self, taken: dict[str, tuple[list[int], list[str]]]) -> None:
        """Signatures of ``taken`` (one batch call a split), kept or written to the file."""
        for split, (ids, texts) in taken.items():
            if not ids:
                continue
            id_array, sigs = np.array(ids, dtype=np.int64), signatures(texts)
            if split == "test":
                self._test.append((id_array, sigs))
            else:
                if self._train is None:
                    self._train = tempfile.TemporaryFile(prefix="annotune-leakage-")  # noqa: SIM115 (closed by finish)
                record = np.empty(len(ids), dtype=_TRAIN_RECORD)
                record["id"], record["sig"] = id_array, sigs
                self._train.write(record.tobytes())

    def _train_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._train is None:
            return
        self._train.seek(0)
        while True:
            chunk = np.frombuffer(self._train.read(BATCH * _TRAIN_RECORD.itemsize),
                                  dtype=_TRAIN_RECORD)
            if not len(chunk):
                return
            yield chunk["id"], np.ascontiguousarray(chunk["sig"])

    def finish(self, counts: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The report and its summary for the version's final ``counts``."""
        self.flush()
        try:
            skipped = _skipped(counts, self.max_samples)
            if skipped is not None:
                return skipped
            test_ids = np.concatenate([ids for ids, _ in self._test])
            test_sigs = np.concatenate([sigs for _, sigs in self._test])
            return match(test_ids, test_sigs, self._train_batches(), self.max_candidates)
        finally:
            if self._train is not None:
                self._train.close()
                self._train = None


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
