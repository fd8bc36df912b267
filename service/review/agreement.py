"""Inter-annotator agreement: Cohen's kappa (two raters), Fleiss' kappa (N raters) and a
normalised edit distance between edited answers. Small pure functions, no database."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

MAX_EDIT_CELLS = 4_000_000  # beyond this, edit distance is estimated (difflib) to bound the work


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa for two raters labelling the same items (``a[i]`` and ``b[i]``).

    ``None`` when there are no items. When chance agreement is 1 (both raters used one and the
    same label throughout) kappa is undefined; we return 1.0 (they agree on everything).
    """
    if len(a) != len(b):
        raise ValueError("both raters must label the same items")
    n = len(a)
    if n == 0:
        return None
    observed = sum(1 for x, y in zip(a, b) if x == y) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an items x categories table of rating counts.

    Every row must sum to the same number of raters n >= 2. ``None`` for an empty table.
    """
    rows = [list(r) for r in table]
    if not rows:
        return None
    n = sum(rows[0])
    if n < 2 or any(sum(r) != n for r in rows):
        raise ValueError("every item needs the same number (>= 2) of ratings")
    n_items = len(rows)
    n_cat = len(rows[0])
    p_items = [(sum(c * c for c in r) - n) / (n * (n - 1)) for r in rows]
    p_bar = sum(p_items) / n_items
    p_cat = [sum(r[j] for r in rows) / (n_items * n) for j in range(n_cat)]
    p_e = sum(p * p for p in p_cat)
    if p_e >= 1.0:
        return 1.0 if p_bar >= 1.0 else 0.0
    return (p_bar - p_e) / (1.0 - p_e)


def fleiss_table(ratings: Sequence[Sequence[str]], categories: Sequence[str] | None = None
                 ) -> list[list[int]]:
    """Turn per-item label lists (``[["accepted", "rejected", ...], ...]``) into counts."""
    cats = list(categories) if categories else sorted({x for item in ratings for x in item})
    index = {c: i for i, c in enumerate(cats)}
    table = []
    for item in ratings:
        row = [0] * len(cats)
        for label in item:
            row[index[label]] += 1
        table.append(row)
    return table


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insert, delete, substitute: cost 1)."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return prev[-1]


def edit_distance_ratio(a: str, b: str) -> float:
    """Edit distance divided by the longer length: 0.0 identical, 1.0 nothing in common."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    if len(a) * len(b) > MAX_EDIT_CELLS:
        import difflib

        return 1.0 - difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()
    return levenshtein(a, b) / longest


def answer_text(messages: Sequence[dict] | None) -> str:
    """The assistant turns of a conversation, joined: what edit distance is measured on."""
    return "\n\n".join(m.get("content", "") for m in (messages or []) if m.get("role") == "assistant")
