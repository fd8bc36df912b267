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

The text compared (``leakage_text``): user and assistant contents joined by a space,
lower-cased, white space runs collapsed to one space and stripped. ``check`` and a build
(``Collector``) collect the joined, raw texts (``raw_text``) and normalise a whole batch over
its code points in numpy (``raw_signatures``): the same texts, the same signatures, with only
the join left per sample in Python.
"""
from __future__ import annotations

import functools
import itertools
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
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


def raw_text(messages: list[dict[str, str]]) -> str:
    """User and assistant contents joined by a space, not normalised: what a build collects per
    sample (``raw_signatures`` normalises a whole batch in numpy)."""
    return " ".join([m["content"] for m in messages if m["role"] != "system"])


def normalise(raw: str) -> str:
    """Lower-cased, white space (``str.isspace``) runs collapsed to one space, stripped.

    The split and join are skipped when they would change nothing (no white space but single
    inner spaces: ``isprintable`` is false for every other white space character), which is
    most single-line text and halves the cost."""
    low = raw.lower()
    if low.isprintable() and "  " not in low and low[:1] != " " and low[-1:] != " ":
        return low
    return " ".join(low.split())


def leakage_text(messages: list[dict[str, str]]) -> str:
    """The text compared for leakage (the definition): user and assistant contents, lower-cased,
    spaces collapsed. ``normalise(raw_text(messages))``."""
    return normalise(raw_text(messages))


def signatures(texts: list[str]) -> np.ndarray:
    """Signatures of texts already normalised (``leakage_text``)."""
    return minhash.signatures(texts, num_perm=NUM_PERM, size=SHINGLE, seed=SEED)


def raw_signatures(raw_texts: list[str]) -> np.ndarray:
    """``signatures([normalise(t) for t in raw_texts])``, normalised in numpy over the batch:
    per sample only the join of ``raw_text`` is Python."""
    sizes = np.fromiter(map(len, raw_texts), dtype=np.int64, count=len(raw_texts))
    parts = [_chunk_signatures(raw_texts[a:b]) for a, b in _chunks(sizes, _CHUNK_CODES)]
    return parts[0] if len(parts) == 1 else np.vstack(parts)


def _chunk_signatures(raw_texts: list[str]) -> np.ndarray:
    """``raw_signatures`` of one chunk (one minhash block)."""
    codes, lengths, unsure = _table_normalised(raw_texts)
    sigs = minhash.signatures_of_codes(codes, lengths, num_perm=NUM_PERM, size=SHINGLE,
                                       seed=SEED)
    if len(unsure):  # rare: their rows again from Python's normalisation
        sigs[unsure] = signatures([normalise(raw_texts[r]) for r in unsure.tolist()])
    return sigs


def _chunks(sizes: np.ndarray, codes: int) -> list[tuple[int, int]]:
    """``(start, end)`` of consecutive texts of about ``codes`` code points each (at least one
    text, at least one chunk)."""
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    cuts = np.searchsorted(ends, np.arange(codes, total, codes), side="right").tolist()
    bounds = sorted({0, *cuts, len(sizes)})
    return list(itertools.pairwise(bounds)) or [(0, 0)]


# --- normalisation over the code points of a batch -------------------------------------------
# ``str.lower`` and ``" ".join(s.split())`` cost ~10 µs a sample of ~900 mostly Chinese
# characters in Python (~9 s of a 900k-sample build). Over the batch's UTF-32 codes, which the
# MinHash needs anyway, lower-casing is a table lookup, and only where a code point may change
# at all; white space is rare, so its runs are worked out on its positions alone and the codes
# are copied once without the dropped ones.

_SPACE = 0x20
#: table value of a code point that Python must lower-case: its lower case is several characters
#: (U+0130) or depends on its neighbours (U+03A3, CPython's final sigma rule)
_PYTHON = 0xFFFFFFFF
_BMP = 0x10000
#: code points the table leaves alone (no case, no white space: checked in the tests), most of a
#: Chinese or Japanese text: CJK punctuation, kana, ideographs, Yi (U+3001 to U+A63F)
_STILL = (0x3001, 0xA640)
#: code points normalised and hashed at a time by ``raw_signatures``, so that the passes over
#: them stay in a core's cache (1 MiB of uint32): for batches of 5000 samples of 900 mostly
#: Chinese characters, 1.37 s per 100k samples against 1.76 s a batch at once (shared 2-core
#: machine, fastest of 3 runs a batch)
_CHUNK_CODES = 1 << 18
#: above this share of code points outside ``_STILL`` (Latin text) the whole batch is looked
#: up: cheaper than finding and scattering that many positions
_DENSE = 0.25


@functools.cache
def _lower_table() -> np.ndarray:
    """Per BMP code point (uint32): its lower case, U+0020 for white space, ``_PYTHON`` where a
    context-free single character would be wrong. ~15 ms, once."""
    table = np.empty(_BMP, dtype=np.uint32)
    for code in range(_BMP):
        low = chr(code).lower()
        # white space lowers to itself (checked in the tests): one code marks it for _dropped
        table[code] = _SPACE if low.isspace() else ord(low) if len(low) == 1 else _PYTHON
    table[0x03A3] = _PYTHON  # 'Σ' -> 'ς' at the end of a word, else 'σ'
    return table


@functools.cache
def _astral_is_plain(code: int) -> bool:
    """An astral code point (emoji, mostly) that lower-casing leaves alone and that is no white
    space; the others (Deseret, Adlam, ... capitals) send their text to Python."""
    char = chr(code)
    return char.lower() == char and not char.isspace()


def _lookup(codes: np.ndarray) -> np.ndarray:
    """The table's value of each of ``codes`` (astral ones: themselves or ``_PYTHON``)."""
    table = _lower_table()
    out: np.ndarray
    if not len(codes) or int(codes.max()) < _BMP:
        out = table[codes]
        return out
    astral = codes >= _BMP
    out = table[np.minimum(codes, _BMP - 1)]
    found = codes[astral]
    kinds = np.unique(found)  # a few distinct emoji, so Python per kind is cheap
    plain = np.fromiter((_astral_is_plain(c) for c in kinds.tolist()), dtype=bool,
                        count=len(kinds))
    out[astral] = np.where(np.isin(found, kinds[~plain]), np.uint32(_PYTHON), found)
    return out


def _looked_up(codes: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """``(at, values)``: the positions where the table may change a code (outside ``_STILL``,
    ascending) and its values there; ``at`` None where it was cheaper to look every code up."""
    # outside _STILL, in one comparison: uint32 subtraction wraps the code points below it
    outside = (codes - np.uint32(_STILL[0])) >= np.uint32(_STILL[1] - _STILL[0])
    if np.count_nonzero(outside) > _DENSE * len(codes):
        return None, _lookup(codes)
    at = np.flatnonzero(outside)
    return at, _lookup(codes[at])


def _dropped(spaces: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of the white space at ``spaces`` (ascending positions in the batch), what
    ``" ".join(text.split())`` drops: every space of a run but the last, and whole runs at
    the start or the end of a text. Their positions and the text of each."""
    ends = np.cumsum(lengths)
    text = np.searchsorted(ends, spaces, side="right")
    first = spaces == (ends - lengths)[text]
    last = spaces + 1 == ends[text]
    adjacent = spaces[1:] == spaces[:-1] + 1
    followed = np.append(adjacent, False)  # the next code is white space too
    run_start = np.insert(~adjacent, 0, True) | first  # a run never spans two texts
    begin = np.maximum.accumulate(np.where(run_start, np.arange(len(spaces)), 0))
    # the last space of an inner run stays (it becomes the separator)
    drop = followed | last | first[begin]
    return spaces[drop], text[drop]


def _applied(codes: np.ndarray, at: np.ndarray | None, values: np.ndarray, drop: np.ndarray
             ) -> np.ndarray:
    """``codes`` with the table's ``values`` at ``at`` (None: all), without those at ``drop``."""
    if at is None:
        return np.delete(values, drop) if len(drop) else values
    # one copy of the codes, without the dropped ones, then the few changed codes put in
    out = np.delete(codes, drop) if len(drop) else codes.copy()
    kept = np.ones(len(at), dtype=bool)
    kept[np.searchsorted(at, drop)] = False  # drop: white space, taken from at
    shift = np.cumsum(~kept)  # codes dropped before each position of at
    out[(at - shift)[kept]] = values[kept]
    return out


def _table_normalised(raw_texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes, lengths, unsure)``: the code points of the texts normalised by the table,
    concatenated, each text's length, and the rows (ascending) whose text has a code point
    the table cannot lower exactly (``_PYTHON``): their codes are wrong, only theirs."""
    codes, lengths = minhash.encode(raw_texts)
    at, values = _looked_up(codes)
    spaces, unsure = (np.flatnonzero(values == v) for v in (_SPACE, _PYTHON))
    if at is not None:
        spaces, unsure = at[spaces], at[unsure]
    drop, dropped_from = _dropped(spaces, lengths)
    out = _applied(codes, at, values, drop)
    out_lengths = lengths - np.bincount(dropped_from, minlength=len(lengths))
    return out, out_lengths, np.unique(np.searchsorted(np.cumsum(lengths), unsure, side="right"))


def normalised(raw_texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The code points of ``[normalise(t) for t in raw_texts]`` concatenated (uint32) and each
    text's length (int64), as ``minhash.signatures_of_codes`` takes them: what
    ``raw_signatures`` hashes (which, cheaper, overwrites the signatures of the rows left to
    Python instead of splicing their codes in as this does)."""
    codes, lengths, unsure = _table_normalised(raw_texts)
    if not len(unsure):
        return codes, lengths
    rows = unsure.tolist()
    new, new_lengths = minhash.encode([normalise(raw_texts[r]) for r in rows])
    starts = (np.cumsum(lengths) - lengths).tolist()
    pieces, done, taken = [], 0, 0
    for row, length in zip(rows, new_lengths.tolist(), strict=True):
        pieces += [codes[done:starts[row]], new[taken:taken + length]]
        done, taken = starts[row] + int(lengths[row]), taken + length
    pieces.append(codes[done:])
    lengths = lengths.copy()
    lengths[rows] = new_lengths
    return np.concatenate(pieces), lengths


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
            yield ids, raw_signatures([raw_text(r[1]) for r in rows])
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
                 max_candidates: int = MAX_CANDIDATES,
                 train_out: Callable[[bytes], None] | None = None) -> None:
        self.active = _skipped(planned, max_samples) is None
        self.max_samples, self.max_candidates = max_samples, max_candidates
        self._pending: dict[str, tuple[list[int], list[str]]] = {"test": ([], []),
                                                                 "train": ([], [])}
        self._test: list[tuple[np.ndarray, np.ndarray]] = []
        self._train: BinaryIO | None = None
        # train records go to the file, or to ``train_out`` (a build's child process sends
        # them to its parent's collector: ``add_train_records``)
        self._train_out = train_out
        self._lock = threading.Lock()  # absorb (array thread) and a child's records (reader)

    def add_test(self, ids: np.ndarray, sigs: np.ndarray) -> None:
        """Test signatures computed elsewhere (a child process of the build)."""
        with self._lock:
            self._test.append((ids, sigs))

    def add_train_records(self, records: bytes) -> None:
        """Train records (``_TRAIN_RECORD``) computed elsewhere (a child process's)."""
        with self._lock:
            self._write_train(records)

    def test_parts(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The test ids and signatures collected (a child sends them to its parent)."""
        return list(self._test)

    def _write_train(self, records: bytes) -> None:
        if self._train_out is not None:
            self._train_out(records)
            return
        if self._train is None:
            self._train = tempfile.TemporaryFile(prefix="annotune-leakage-")  # noqa: SIM115 (closed by finish)
        self._train.write(records)

    def add(self, split: str, sample_id: int, messages: list[dict[str, str]]) -> None:
        pending = self._pending.get(split)
        if self.active and pending is not None:
            pending[0].append(sample_id)
            pending[1].append(raw_text(messages))

    def pending(self) -> list[tuple[list[int], list[str]] | None]:
        """Per split code (``SPLITS`` order), the ``(ids, texts)`` lists ``add`` appends to
        until the next ``take``, or None where nothing is collected: a build's loop appends
        to them itself. The texts are raw: ``raw_text(messages)``, not ``leakage_text``
        (``absorb`` normalises a batch in numpy: ``raw_signatures``)."""
        return [self._pending.get(s) if self.active else None for s in SPLITS]

    def take(self) -> dict[str, tuple[list[int], list[str]]]:
        """The samples added since the last ``take``, for ``absorb`` (in another thread)."""
        taken, self._pending = self._pending, {"test": ([], []), "train": ([], [])}
        return taken

    def flush(self) -> None:
        self.absorb(self.take())

    def absorb(self, taken: dict[str, tuple[list[int], list[str]]]) -> None:
        """Signatures of ``taken``'s raw texts (one batch call a split), kept or written to
        the file."""
        for split, (ids, texts) in taken.items():
            if not ids:
                continue
            id_array, sigs = np.array(ids, dtype=np.int64), raw_signatures(texts)
            if split == "test":
                self.add_test(id_array, sigs)
            else:
                record = np.empty(len(ids), dtype=_TRAIN_RECORD)
                record["id"], record["sig"] = id_array, sigs
                self.add_train_records(record.tobytes())

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
