"""``tokens.SimpleTokenizer`` counts for a whole batch of texts at once, in numpy.

A version build counts the tokens of every frozen sample; the tokenizer's regex
(``[CJK]|[^\\W CJK]+|[^\\w\\s]``), one ``findall`` per message, was a fifth of the build. The
same count follows from one class per code point: a CJK character is a token, a run of other
word characters (``\\w``: ``str.isalnum()`` or ``_``) is one token, any other non-space
character is a token, white space (``str.isspace()``) is none. So a text's count is the number
of CJK and other characters plus the number of word runs that start in it, which array
operations find over the code points of a whole batch (texts joined by ``\\n``, which ends a
run and is no token). ``tests/datasets/test_build.py`` checks it against the regex.
"""
from __future__ import annotations

import functools

import numpy as np

from service.samples.tokens import _CJK

SPACE, SINGLE, WORD = 0, 1, 2
_BMP = 0x10000


@functools.cache
def _cjk_ranges() -> tuple[tuple[int, int], ...]:
    """The ``_CJK`` character class ("a-bc-d...") as (first, last) code point ranges."""
    return tuple((ord(lo), ord(hi)) for lo, hi in zip(_CJK[0::3], _CJK[2::3], strict=True))


def classify(code: int) -> int:
    """The class of one code point, as the tokenizer's regex sees it."""
    if any(lo <= code <= hi for lo, hi in _cjk_ranges()):
        return SINGLE
    ch = chr(code)
    if ch.isalnum() or ch == "_":
        return WORD
    return SPACE if ch.isspace() else SINGLE


@functools.cache
def _bmp_table() -> np.ndarray:
    """Classes of every code point below U+10000 (built once, ~30 ms)."""
    table = np.fromiter((WORD if (c := chr(i)).isalnum() or c == "_" else
                         SPACE if c.isspace() else SINGLE for i in range(_BMP)),
                        dtype=np.uint8, count=_BMP)
    for lo, hi in _cjk_ranges():
        table[lo:hi + 1] = SINGLE
    return table


def simple_counts(texts: list[str], block: int = 1024) -> np.ndarray:
    """``[SimpleTokenizer().count(t) for t in texts]`` as an int64 array (``block`` texts at a
    time: the temporaries stay at ~10 bytes a character of a block)."""
    if len(texts) > block:
        return np.concatenate([simple_counts(texts[i:i + block], block)
                               for i in range(0, len(texts), block)])
    if not texts:
        return np.zeros(0, dtype=np.int64)
    lengths = np.fromiter((len(t) + 1 for t in texts), dtype=np.int64, count=len(texts))
    codes = np.frombuffer(("\n".join(texts) + "\n").encode("utf-32-le", "surrogatepass"),
                          dtype=np.uint32)
    table = _bmp_table()
    astral = codes >= _BMP
    if astral.any():  # emoji and rarer scripts: classify the distinct ones in Python
        cls = table[np.where(astral, 0, codes)]
        distinct, inverse = np.unique(codes[astral], return_inverse=True)
        cls[astral] = np.array([classify(int(c)) for c in distinct], dtype=np.uint8)[inverse]
    else:
        cls = table[codes]
    word = cls == WORD
    starts_token = cls == SINGLE
    starts_token[0] |= word[0]
    starts_token[1:] |= word[1:] & ~word[:-1]
    # every text is followed by its "\n", so no segment is empty
    begin = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    counts: np.ndarray = np.add.reduceat(starts_token.view(np.uint8), begin, dtype=np.int64)
    return counts
