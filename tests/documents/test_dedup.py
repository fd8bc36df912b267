"""find_duplicates: planted exact and near duplicates are found, distinct text is not."""

from __future__ import annotations

import random
import time

import pytest

from service.documents.dedup import Cluster, content_hash, find_duplicates, normalize_text

# --------------------------------------------------------------------------- factories

SYLLABLES = (  # noqa: SIM905
    "ka ri to mu se na lo pe vi zu an el or um is et ba co di fu ga he jo ku"
).split()
HANZI = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过"
    "子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体"
    "制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内"
)


def make_words(rng: random.Random, count: int) -> list[str]:
    return ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(count)]


def english_chunk(rng: random.Random, vocabulary: list[str], words: int = 120) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(words)) + "."


def chinese_chunk(rng: random.Random, chars: int = 300) -> str:
    return "".join(
        rng.choice(HANZI) if rng.random() > 0.06 else rng.choice("，。；") for _ in range(chars)
    )


def change_words(rng: random.Random, text: str, vocabulary: list[str], count: int) -> str:
    words = text.split(" ")
    for index in rng.sample(range(len(words)), count):
        words[index] = rng.choice(vocabulary)
    return " ".join(words)


def change_chars(rng: random.Random, text: str, count: int) -> str:
    chars = list(text)
    for index in rng.sample(range(len(chars)), count):
        chars[index] = rng.choice(HANZI)
    return "".join(chars)


def corpus(seed: int = 42, english: int = 300, chinese: int = 200) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    vocabulary = make_words(rng, 3000)
    items = [(f"en-{i}", english_chunk(rng, vocabulary)) for i in range(english)]
    items += [(f"zh-{i}", chinese_chunk(rng)) for i in range(chinese)]
    return items


# --------------------------------------------------------------------------- tests


def test_distinct_corpus_has_no_clusters() -> None:
    assert find_duplicates(corpus()) == []


def test_planted_duplicates_are_found() -> None:
    rng = random.Random(5)
    vocabulary = make_words(random.Random(42), 3000)
    items = corpus()
    texts = dict(items)
    planted = [
        ("en-near", change_words(rng, texts["en-10"], vocabulary, 3)),
        ("en-near-2", change_words(rng, texts["en-10"], vocabulary, 2)),
        ("zh-near", change_chars(rng, texts["zh-7"], 4)),
        ("en-exact", "  " + texts["en-99"].replace(" ", "\n", 5) + " "),
        ("zh-exact", texts["zh-150"]),
    ]
    clusters = find_duplicates(items + planted)
    by_rep = {c.representative: c for c in clusters}
    assert set(by_rep) == {"en-10", "zh-7", "en-99", "zh-150"}
    assert by_rep["en-10"].kind == "near"
    assert by_rep["en-10"].members == ["en-10", "en-near", "en-near-2"]
    assert 0.8 <= by_rep["en-10"].similarity < 1.0
    assert by_rep["zh-7"].kind == "near" and by_rep["zh-7"].members == ["zh-7", "zh-near"]
    assert by_rep["en-99"].kind == "exact" and by_rep["en-99"].members == ["en-99", "en-exact"]
    assert by_rep["en-99"].similarity == 1.0
    assert by_rep["en-10"].kinds == {"en-near": "near", "en-near-2": "near"}
    assert by_rep["en-99"].kinds == {"en-exact": "exact"}
    assert by_rep["zh-150"].kind == "exact"
    assert by_rep["zh-150"].duplicates == ["zh-exact"]


def test_heavily_edited_text_is_not_a_near_duplicate() -> None:
    rng = random.Random(9)
    vocabulary = make_words(random.Random(42), 3000)
    original = english_chunk(rng, vocabulary)
    rewritten = change_words(rng, original, vocabulary, 60)  # half the words replaced
    assert find_duplicates([(1, original), (2, rewritten)]) == []


def test_exact_and_near_in_one_component() -> None:
    rng = random.Random(3)
    base = chinese_chunk(rng, 400)
    items = [(1, base), (2, base + " "), (3, change_chars(rng, base, 3))]
    (cluster,) = find_duplicates(items)
    assert cluster == Cluster(
        kind="near",
        representative=1,
        members=[1, 2, 3],
        similarity=cluster.similarity,
        kinds={2: "exact", 3: "near"},
    )


def test_threshold_parameter() -> None:
    rng = random.Random(4)
    vocabulary = make_words(random.Random(42), 3000)
    original = english_chunk(rng, vocabulary)
    edited = change_words(rng, original, vocabulary, 20)
    strict = find_duplicates([(1, original), (2, edited)], threshold=0.95)
    loose = find_duplicates([(1, original), (2, edited)], threshold=0.5)
    assert strict == [] and len(loose) == 1


def test_short_and_empty_texts() -> None:
    clusters = find_duplicates([(1, "abc"), (2, "abc"), (3, ""), (4, " "), (5, "xyz")])
    assert [(c.kind, c.members) for c in clusters] == [("exact", [1, 2]), ("exact", [3, 4])]


def test_validation() -> None:
    with pytest.raises(ValueError, match="unique"):
        find_duplicates([(1, "a"), (1, "b")])
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates([(1, "a")], threshold=0)


def test_normalization_and_hash() -> None:
    assert normalize_text("  Ｆｕｌｌ\u3000width\n\ttext ") == "Full width text"
    assert content_hash("a  b") == content_hash("a\nb") != content_hash("a b c")


def test_speed_on_a_few_thousand_chunks() -> None:
    items = corpus(seed=1, english=1500, chinese=1000)
    started = time.perf_counter()
    assert find_duplicates(items) == []
    assert time.perf_counter() - started < 20


def test_bands_keep_recall_at_the_threshold() -> None:
    from service.documents.dedup import bands_for

    for threshold in (0.5, 0.7, 0.8, 0.9, 0.95):
        bands, rows = bands_for(threshold, 128)
        assert bands * rows == 128
        assert 1 - (1 - threshold**rows) ** bands >= 0.9
        if rows < 128:  # one more row per band would lose the recall
            bigger = next(r for r in range(rows + 1, 129) if 128 % r == 0)
            assert 1 - (1 - threshold**bigger) ** (128 // bigger) < 0.9
