"""Batched MinHash signatures and banded LSH candidate pairs, in numpy.

For near-duplicate checks over hundreds of thousands of texts (a dataset version's test/train
leakage): one call hashes the character shingles of a whole batch of texts and reduces them to
signatures with array operations, no Python loop per shingle or per text.

* Shingles: the character ``k``-grams of a text (code points, so Chinese needs no word
  splitting), hashed by a polynomial over the code points kept within 32 bits, then mixed by
  MurmurHash3's 32-bit finaliser. A text shorter than ``k`` is one shingle, the whole text.
* Signatures: one-permutation hashing (Li, Owen and Zhang, 2012) with rotation densification
  (Shrivastava and Li, 2014): each shingle hash lands in one of ``num_perm`` bins, each bin keeps
  its minimum. The fraction of equal bins between two signatures estimates the Jaccard
  similarity of their shingle sets, as ``num_perm`` independent permutations would, for one hash
  per shingle.
* Input: a list of texts, or (``*_of_codes``) their code points already in one uint32 array
  with a length per text (``encode``), for callers that transform the code points in numpy
  first; both give the same signatures for the same code points.
* LSH: signatures cut into ``bands`` bands of ``rows`` values; two texts are candidates when one
  band is equal (compared by a 64-bit hash of the band, then confirmed on the full signatures by
  the caller). Candidate pairs come from sorted arrays and ``searchsorted``, not dictionaries.
"""
from __future__ import annotations

import numpy as np

_BASE = np.uint32(1_000_003)
_GOLDEN = 0x9E3779B1
_TEXT_BLOCK = 1024


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of affine maps ``x -> a*x + b (mod 2^32)``, uint32, ``a`` odd (bijections)."""
    rng = np.random.RandomState(seed)
    a = rng.randint(1, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.randint(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (spreads polynomial hashes over all bits)."""
    return _fmix32_inplace(values.astype(np.uint32, copy=True))


def _fmix32_inplace(values: np.ndarray) -> np.ndarray:
    """``fmix32`` overwriting ``values`` (uint32): no temporaries but one shifted copy."""
    tmp = np.empty_like(values)
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, None)):
        np.right_shift(values, np.uint32(shift), out=tmp)
        np.bitwise_xor(values, tmp, out=values)
        if mult is not None:
            np.multiply(values, np.uint32(mult), out=values)
    return values


def _polynomial(codes: np.ndarray, size: int, count: int) -> np.ndarray:
    """Hash of each window of ``size`` code points; uint32 arithmetic wraps mod 2^32."""
    acc = codes[:count].copy()
    for offset in range(1, size):
        np.multiply(acc, _BASE, out=acc)
        np.add(acc, codes[offset:offset + count], out=acc)
    return acc


def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The code points of ``texts`` concatenated (uint32; a lone surrogate is its own code) and
    each text's length in code points (int64): the form the ``*_of_codes`` functions take."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    codes = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    return codes, lengths


def shingle_hashes(texts: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mixed 32-bit hashes of every text's ``size``-grams, concatenated, and the index in that
    array where each text's hashes start (every text has at least one)."""
    return shingle_hashes_of_codes(*encode(texts), size)


def shingle_hashes_of_codes(codes: np.ndarray, lengths: np.ndarray, size: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """``shingle_hashes`` of texts given as ``encode`` gives them (at least one text)."""
    counts = np.maximum(lengths - size + 1, 1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    if lengths.min() >= size:  # the usual case: every window that stays inside one text
        keep = np.ones(len(codes) - size + 1, dtype=bool)
        ends = np.cumsum(lengths)[:-1]  # a window starting in the last size-1 places crosses
        keep[(ends[:, None] - np.arange(1, size)).ravel()] = False
        return _fmix32_inplace(_polynomial(codes, size, len(keep))[keep]), starts
    text_starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    hashes = np.zeros(int(counts.sum()), dtype=np.uint32)
    for i, (start, n) in enumerate(zip(text_starts.tolist(), lengths.tolist())):
        window = min(size, n)
        if window:  # an empty text keeps its one shingle hash 0
            hashes[starts[i]:starts[i] + counts[i]] = _polynomial(
                codes[start:start + n], window, n - window + 1)
    return fmix32(hashes), starts


def signatures(texts: list[str], *, num_perm: int, size: int, seed: int) -> np.ndarray:
    """One-permutation MinHash signatures of ``texts``: uint32, shape ``(len(texts), num_perm)``.

    Every shingle is hashed once (seeded), its top bits pick one of ``num_perm`` bins (a power
    of two) and the bin keeps the smallest of the remaining bits; an empty bin (texts with few
    shingles) borrows the next non-empty bin to its right, circularly, offset by the distance
    (rotation densification). Equal bins estimate Jaccard similarity like ``num_perm``
    permutations would, at the cost of one hash per shingle instead of ``num_perm``.
    """
    if num_perm & (num_perm - 1) or not 2 <= num_perm <= 1024:
        raise ValueError("num_perm must be a power of two between 2 and 1024")
    if len(texts) > _TEXT_BLOCK:  # encoded a block at a time: no code array for all texts
        return np.vstack([signatures(texts[i:i + _TEXT_BLOCK], num_perm=num_perm, size=size,
                                     seed=seed) for i in range(0, len(texts), _TEXT_BLOCK)])
    return signatures_of_codes(*encode(texts), num_perm=num_perm, size=size, seed=seed)


def signatures_of_codes(codes: np.ndarray, lengths: np.ndarray, *, num_perm: int, size: int,
                        seed: int) -> np.ndarray:
    """``signatures`` of texts given as ``encode`` gives them: ``codes``, the code points of
    all texts concatenated (uint32), and ``lengths``, one a text (for callers that transform
    the code points in numpy first, such as the leakage check's normalisation)."""
    if num_perm & (num_perm - 1) or not 2 <= num_perm <= 1024:
        raise ValueError("num_perm must be a power of two between 2 and 1024")
    codes = np.asarray(codes, dtype=np.uint32)
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(codes) != int(lengths.sum()):
        raise ValueError("lengths must add up to the number of codes")
    if not len(lengths):
        return np.zeros((0, num_perm), dtype=np.uint32)
    # bounded temporaries (~40 bytes a character of a block): blocks of _TEXT_BLOCK texts
    ends = np.cumsum(lengths).tolist()
    parts = []
    for first in range(0, len(lengths), _TEXT_BLOCK):
        last = min(first + _TEXT_BLOCK, len(lengths))
        begin = ends[first - 1] if first else 0
        parts.append(_block_signatures(codes[begin:ends[last - 1]], lengths[first:last],
                                       num_perm, size, seed))
    return parts[0] if len(parts) == 1 else np.vstack(parts)


def _block_signatures(codes: np.ndarray, lengths: np.ndarray, num_perm: int, size: int,
                      seed: int) -> np.ndarray:
    """``signatures_of_codes`` of one block of texts (at least one), in one pass."""
    bits = num_perm.bit_length() - 1
    a, b = permutations(1, seed)
    hashes, starts = shingle_hashes_of_codes(codes, lengths, size)
    np.multiply(hashes, a[0], out=hashes)  # seeded: another seed, other bins and values
    np.add(hashes, b[0], out=hashes)
    _fmix32_inplace(hashes)
    # the slot of a shingle: its text's first bin plus the top ``bits`` bits of its hash
    slot = np.repeat(np.arange(0, len(lengths) * num_perm, num_perm, dtype=np.intp),
                     np.diff(np.append(starts, len(hashes))))
    slot += hashes >> np.uint32(32 - bits)
    np.bitwise_and(hashes, np.uint32((1 << (32 - bits)) - 1), out=hashes)
    empty = np.uint32(0xFFFFFFFF)
    out = np.full(len(lengths) * num_perm, empty, dtype=np.uint32)
    np.minimum.at(out, slot, hashes)
    out = out.reshape(len(lengths), num_perm)  # type: ignore[assignment]
    rows = np.flatnonzero((out == empty).any(axis=1))
    if len(rows):
        out[rows] = _densify(out[rows], empty)
    return out


def _densify(block: np.ndarray, empty: np.uint32) -> np.ndarray:
    """Fill each empty bin from the next non-empty bin to its right, circularly, plus a
    multiple of the distance (so that borrowed values differ from the bins they copy)."""
    filled = block.copy()
    present = block != empty
    need = ~present
    for distance in range(1, block.shape[1]):
        if not need.any():
            break
        source_ok = np.roll(present, -distance, axis=1)
        take = need & source_ok
        offset = np.uint32((_GOLDEN * distance) & 0xFFFFFFFF)
        filled[take] = np.roll(block, -distance, axis=1)[take] + offset
        need &= ~take
    return filled


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """A 64-bit hash of each band of each signature: shape ``(len(sigs), bands)``."""
    out = np.zeros((len(sigs), bands), dtype=np.uint64)
    for band in range(bands):
        acc = np.full(len(sigs), 0xCBF29CE484222325, dtype=np.uint64)
        for col in range(band * rows, (band + 1) * rows):  # FNV-1a over the band's values
            acc ^= sigs[:, col]
            acc *= np.uint64(0x100000001B3)
        out[:, band] = acc
    return out


class BandIndex:
    """Band hashes of an indexed set (e.g. the test split), sorted per band for lookups."""

    def __init__(self, sigs: np.ndarray, bands: int, rows: int) -> None:
        self.sigs, self.bands, self.rows = sigs, bands, rows
        hashed = band_hashes(sigs, bands, rows)
        self._order = [np.argsort(hashed[:, j], kind="stable") for j in range(bands)]
        self._sorted = [hashed[self._order[j], j] for j in range(bands)]

    def candidates(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(query_rows, indexed_rows)``: every pair sharing at least one band, once."""
        hashed = band_hashes(query, self.bands, self.rows)
        pairs_q, pairs_i = [], []
        for j in range(self.bands):
            left = np.searchsorted(self._sorted[j], hashed[:, j], side="left")
            right = np.searchsorted(self._sorted[j], hashed[:, j], side="right")
            counts = right - left
            hit = np.flatnonzero(counts)
            if not len(hit):
                continue
            counts = counts[hit]
            offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            pairs_q.append(np.repeat(hit, counts))
            pairs_i.append(self._order[j][np.repeat(left[hit], counts) + offsets])
        if not pairs_q:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        q, i = np.concatenate(pairs_q), np.concatenate(pairs_i)
        key = np.unique(q.astype(np.int64) * len(self.sigs) + i)
        return key // len(self.sigs), key % len(self.sigs)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity of paired signature rows (fraction of equal values)."""
    out: np.ndarray = (a == b).mean(axis=1)
    return out
