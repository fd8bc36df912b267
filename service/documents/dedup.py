"""Exact and near-duplicate detection for chunks (pure Python, no database).

Exact duplicates share ``content_hash`` (SHA-256 of the NFKC-normalised, whitespace-collapsed
text), the same value ``chunking`` stores on every chunk.

Near duplicates: MinHash signatures over character shingles (so Chinese, which has no spaces,
works the same as English): one-permutation MinHash with ``num_perm`` bins, computed for all
texts at once with numpy (``service.core.minhash``), indexed by LSH bands chosen for the
threshold (``bands_for``: a pair right at the threshold is a candidate at least 90% of the
time). Every candidate pair is confirmed with the signatures' estimated Jaccard similarity
before it links two items, and linked items are grouped into connected components.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from service.core import minhash

__all__ = ["Cluster", "content_hash", "find_duplicates", "normalize_text"]

_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC (full-width -> ASCII, compatibility forms) and single spaces, trimmed."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def content_hash(text: str) -> str:
    """Hex SHA-256 of ``normalize_text(text)``: equal for texts differing only in spacing."""
    return hashlib.sha256(normalize_text(text).encode("utf-8")).hexdigest()


@dataclass
class Cluster:
    """Items that duplicate each other.

    ``kind`` is ``"exact"`` when every member has the same normalised text, else ``"near"``.
    ``representative`` is the member that came first in the input; ``members`` lists all ids
    (representative included) in input order. ``similarity`` is the lowest estimated Jaccard
    similarity of a link that joined the cluster (1.0 for exact clusters). ``kinds`` says, for
    each member but the representative, whether its normalised text equals the
    representative's (``"exact"``) or not (``"near"``): a near cluster can hold exact copies.
    """

    kind: Literal["exact", "near"]
    representative: Hashable
    members: list[Hashable] = field(default_factory=list)
    similarity: float = 1.0
    kinds: dict[Hashable, Literal["exact", "near"]] = field(default_factory=dict)

    @property
    def duplicates(self) -> list[Hashable]:
        """Members other than the representative."""
        return [m for m in self.members if m != self.representative]


def find_duplicates(
    items: Iterable[tuple[Hashable, str]],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_size: int = 5,
    seed: int = 1,
    batch: int = 5000,
) -> list[Cluster]:
    """Group ``(id, text)`` items into duplicate clusters; items with no duplicate are omitted.

    ``threshold`` is the Jaccard similarity of character ``shingle_size``-grams above which two
    texts count as near duplicates. Clusters come back in order of their representative.

    ``items`` may be a stream (e.g. a database cursor): it is read once, ``batch`` at a time, and
    no text is kept, only a 16-byte digest of each normalised text (exact duplicates) and one
    signature of ``num_perm`` 32-bit values for each distinct text.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    if shingle_size < 1:
        raise ValueError("shingle_size must be positive")
    ids: list[Hashable] = []
    seen: set[Hashable] = set()
    head_of: list[int] = []  # item -> first item with the same normalised text
    first_with: dict[bytes, int] = {}  # digest of a normalised text -> its first item
    heads: list[int] = []  # first item of each group of identical normalised texts
    signature_parts = []
    pending: list[str] = []  # lower-cased normalised texts of new heads, not yet signed

    def sign() -> None:
        if pending:
            signature_parts.append(minhash.signatures(pending, num_perm=num_perm,
                                                      size=shingle_size, seed=seed))
            pending.clear()

    for item_id, text in items:
        if item_id in seen:
            raise ValueError("item ids must be unique")
        seen.add(item_id)
        index = len(ids)
        ids.append(item_id)
        normalized = normalize_text(text)
        digest = hashlib.blake2b(normalized.encode("utf-8"), digest_size=16).digest()
        head = first_with.setdefault(digest, index)
        head_of.append(head)
        if head == index:
            heads.append(index)
            pending.append(normalized.lower())
            if len(pending) >= batch:
                sign()
    sign()

    union = _UnionFind(len(ids))
    for index, head in enumerate(head_of):
        if head != index:
            union.union(head, index)
    near_links = _near_links(signature_parts, threshold, num_perm) if len(heads) > 1 else []
    for a, b, _ in near_links:
        union.union(heads[a], heads[b])
    similarity: dict[int, float] = {}
    for a, _, value in near_links:
        root = union.find(heads[a])
        similarity[root] = min(value, similarity.get(root, 1.0))
    return _clusters(ids, union, similarity, head_of)


def _clusters(
    ids: list[Hashable],
    union: _UnionFind,
    near_similarity: dict[int, float],
    head_of: list[int],
) -> list[Cluster]:
    """Connected components of two or more items; roots are each component's first item."""
    components: dict[int, list[int]] = {}
    for index in range(len(ids)):
        components.setdefault(union.find(index), []).append(index)
    clusters: list[Cluster] = []
    for root in sorted(components):
        members = components[root]
        if len(members) < 2:
            continue
        near = root in near_similarity
        clusters.append(
            Cluster(
                kind="near" if near else "exact",
                representative=ids[root],
                members=[ids[i] for i in members],
                similarity=near_similarity.get(root, 1.0),
                kinds={
                    ids[i]: "exact" if head_of[i] == head_of[root] else "near" for i in members[1:]
                },
            )
        )
    return clusters


# --------------------------------------------------------------------------- MinHash LSH

_QUERY_BLOCK = 20_000  # texts looked up at once (bounds the candidate arrays)
_MIN_RECALL = 0.9  # a pair right at the threshold becomes a candidate at least this often


def bands_for(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)``, ``bands * rows == num_perm``: the most rows per band (fewest chance
    candidates) with which a pair of similarity ``threshold`` is still a candidate with
    probability >= ``_MIN_RECALL`` (``1 - (1 - t^rows)^bands``)."""
    for rows in sorted((r for r in range(1, num_perm + 1) if num_perm % r == 0), reverse=True):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= _MIN_RECALL:
            return bands, rows
    return num_perm, 1


def _near_links(signature_parts: list, threshold: float, num_perm: int
                ) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, estimated_jaccard)`` with ``i < j`` among the distinct texts' signatures:
    banded LSH over them, every candidate pair confirmed on the full signatures."""
    import numpy as np

    sigs = np.vstack(signature_parts)
    index = minhash.BandIndex(sigs, *bands_for(threshold, num_perm))
    links: list[tuple[int, int, float]] = []
    for start in range(0, len(sigs), _QUERY_BLOCK):
        q, i = index.candidates(sigs[start:start + _QUERY_BLOCK])
        q = q + start
        keep = i < q  # each pair once, earlier text first
        q, i = q[keep], i[keep]
        sim = minhash.similarity(sigs[q], sigs[i])
        ok = sim >= threshold
        links += zip(i[ok].tolist(), q[ok].tolist(), sim[ok].tolist())
    links.sort()
    return links


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, index: int) -> int:
        root = index
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[index] != root:
            self.parent[index], index = root, self.parent[index]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller index stays root, so roots are first-seen members
            self.parent[max(ra, rb)] = min(ra, rb)
