"""The leakage check's batch normalisation in numpy (``leakage.normalised``/``raw_signatures``)
against its definition in Python (``leakage.normalise``: ``str.lower`` and
``" ".join(s.split())``): the same code points for any text, white space of every kind, the
characters the lower-case table leaves to Python ('İ', 'Σ', astral capitals) and batches mixing
both paths; and the collector fed raw texts gives the report of the normalised ones."""
from __future__ import annotations

import random
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core import minhash
from service.datasets import leakage
from tests.datasets.test_leakage import _reference_signature

#: every character ``str.isspace`` is true for (``str.split`` splits on exactly these)
SPACES = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
          + "\u2028\u2029\u202f\u205f\u3000")
#: the characters the table sends to Python, cased neighbours for the final-sigma rule and
#: case-ignorable ones it skips, astral characters with and without a lower case
SPECIAL = ["İ", "Σ", "σ", "ς", "Α", "a", "Z", "'", "\u0301", ".", "你", "。", "\u3001", "\ua63f",
           "\ua640", "Ａ", "😀", "𐐀", "𐐨", "\U0001e900", "\u200d", "\ud800"]
#: ``leakage._DENSE`` forcing the lookup of every code point, and forcing the lookup of only
#: those outside ``leakage._STILL``
PATHS = (0.0, 1.0)

# a list of characters joined, not st.text: text() merges an alphabet into code point intervals
# and draws the low ones most, so the astral ones would hardly ever come
_char = st.one_of(st.characters(), st.sampled_from(SPACES), st.sampled_from(SPECIAL))
_text = st.one_of(st.lists(_char, max_size=40).map("".join),
                  st.text(alphabet=st.sampled_from(SPACES), max_size=6),
                  st.sampled_from(["", " ", "ΟΔΟΣ", "ΟΔΟΣ ΑΣΑ", "Σ", "İ", " x ", "ab  cd"]))


def definition(raw: str) -> str:
    return " ".join(raw.lower().split())


def decoded(raw_texts: list[str], dense: float = leakage._DENSE) -> list[str]:
    """``leakage.normalised`` of ``raw_texts``, back as strings, one a text."""
    with mock.patch.object(leakage, "_DENSE", dense):
        codes, lengths = leakage.normalised(raw_texts)
    assert codes.dtype == np.uint32 and lengths.dtype == np.int64
    assert len(lengths) == len(raw_texts) and int(lengths.sum()) == len(codes)
    ends = np.cumsum(lengths).tolist()
    return [codes[end - n:end].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")
            for end, n in zip(ends, lengths.tolist(), strict=True)]


@pytest.mark.nodb
@settings(max_examples=400, deadline=None)
@given(texts=st.lists(_text, max_size=8))
def test_normalised_codes_equal_the_python_normalisation(texts):
    expected = [definition(t) for t in texts]
    assert [leakage.normalise(t) for t in texts] == expected
    for dense in PATHS:
        assert decoded(texts, dense) == expected, dense


@pytest.mark.nodb
@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.lists(st.one_of(st.sampled_from("你好世界付款。、"), _char), max_size=60)
                      .map("".join), max_size=6))
def test_mostly_chinese_texts_equal_the_python_normalisation(texts):
    expected = [definition(t) for t in texts]
    for dense in PATHS:
        assert decoded(texts, dense) == expected, dense


@pytest.mark.nodb
@settings(max_examples=100, deadline=None)
@given(texts=st.lists(_text, min_size=1, max_size=6))
def test_raw_signatures_equal_the_signatures_of_the_normalised_texts(texts):
    expected = leakage.signatures([leakage.normalise(t) for t in texts])
    for chunk in (leakage._CHUNK_CODES, 30):  # one chunk, and a few texts a chunk
        with mock.patch.object(leakage, "_CHUNK_CODES", chunk):
            assert np.array_equal(leakage.raw_signatures(texts), expected), chunk


@pytest.mark.nodb
@given(messages=st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["system", "user", "assistant"]), "content": _text}), max_size=4))
def test_leakage_text_is_the_normalised_raw_text(messages):
    raw = leakage.raw_text(messages)
    assert raw == " ".join(m["content"] for m in messages if m["role"] != "system")
    assert leakage.leakage_text(messages) == leakage.normalise(raw) == definition(raw)


@pytest.mark.nodb
def test_the_table_knows_every_white_space_character():
    table = leakage._lower_table()
    spaces = {c for c in range(0x110000) if chr(c).isspace()}
    assert spaces == {ord(c) for c in SPACES}  # all in the BMP: none left to the astral check
    assert set(np.flatnonzero(table == 0x20).tolist()) == spaces
    assert all(chr(c).lower() == chr(c) for c in spaces)
    assert set(np.flatnonzero(table == leakage._PYTHON).tolist()) == {0x130, 0x3A3}
    still = np.arange(*leakage._STILL, dtype=np.uint32)
    assert np.array_equal(table[still], still)  # no case, no white space: not looked up


@pytest.mark.nodb
def test_a_batch_mixing_table_and_python_texts_keeps_its_order():
    rng = random.Random(3)
    fast = ["你好世界" * 30 + " Hello  World\n", "  lead and trail \t", "", "\u3000\u3000", "abcd",
            "😀 EMOJI 😀", "Ünïcödé ÀÉÎ"]
    slow = ["İstanbul", "ΟΔΟΣ ΣΟΦΟΣ.", "𐐀𐐁 Deseret", "\U0001e900 adlam", "x Σ", "Σ"]
    texts = [rng.choice(fast + slow) + rng.choice(["", " ", "Q"]) for _ in range(1500)]
    texts[1023:1026] = slow[:3]  # Python texts at the block boundary of core.minhash
    for dense in PATHS:
        assert decoded(texts, dense) == [definition(t) for t in texts]
    sigs = leakage.raw_signatures(texts)
    assert sigs.shape == (len(texts), leakage.NUM_PERM)
    assert np.array_equal(sigs, leakage.signatures([definition(t) for t in texts]))
    with mock.patch.object(leakage, "_CHUNK_CODES", 1000):  # chunks of ~50 texts
        assert np.array_equal(leakage.raw_signatures(texts), sigs)
    for i in (0, 1, 1023, 1024, 1025, len(texts) - 1):
        assert sigs[i].tolist() == _reference_signature(definition(texts[i])), texts[i]
    assert leakage.raw_signatures([]).shape == (0, leakage.NUM_PERM)


@pytest.mark.nodb
@pytest.mark.parametrize(("sizes", "chunks"), [
    ([], [(0, 0)]), ([0, 0], [(0, 2)]), ([5, 5, 5, 5, 5], [(0, 2), (2, 4), (4, 5)]),
    ([30, 1, 1], [(0, 1), (1, 3)]), ([9, 9], [(0, 1), (1, 2)])])
def test_chunks_cover_every_text_once(sizes, chunks):
    assert leakage._chunks(np.array(sizes, dtype=np.int64), 10) == chunks


@pytest.mark.nodb
def test_signatures_of_codes_equal_signatures_of_texts():
    rng = random.Random(8)
    texts = ["".join(rng.choice("ab 付款😀") for _ in range(rng.randint(0, 12))) for _ in range(2100)]
    codes, lengths = minhash.encode(texts)
    args = {"num_perm": 64, "size": 5, "seed": 1}
    assert np.array_equal(minhash.signatures_of_codes(codes, lengths, **args),
                          minhash.signatures(texts, **args))
    with pytest.raises(ValueError, match="lengths"):
        minhash.signatures_of_codes(codes, lengths[:-1], **args)


@pytest.mark.nodb
def test_collector_fed_raw_texts_reports_what_the_normalised_texts_match():
    rng = random.Random(6)
    words = ["Payment", "CONTRACT", "付款", "合同", "Σοφός", "İleri", "交货", "Delivery"]
    texts = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(40)]
    samples = [(i, texts[i % 20] + ("\n\n" if i % 3 else "  "), "test" if i < 16 else "train")
               for i in range(40)]
    collector = leakage.Collector({"test": 16, "train": 24})
    for sid, text, split in samples:
        collector.add(split, sid, [{"role": "system", "content": "x"},
                                   {"role": "user", "content": text.upper()},
                                   {"role": "assistant", "content": " OK "}])
        if sid % 7 == 0:
            collector.flush()
    report, info = collector.finish({"test": 16, "train": 24})

    def side(split: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [(sid, f"{text.upper()}  OK ") for sid, text, s in samples if s == split]
        return (np.array([sid for sid, _ in rows], dtype=np.int64),
                leakage.signatures([definition(t) for _, t in rows]))

    assert (report, info) == leakage.match(*side("test"), [side("train")])
    assert info["checked"] is True and len(report) == 16
