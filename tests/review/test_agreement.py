"""Kappa and edit distance against hand-computed values."""
from __future__ import annotations

import pytest

from service.review.agreement import (
    answer_text,
    cohen_kappa,
    edit_distance_ratio,
    fleiss_kappa,
    fleiss_table,
    levenshtein,
)

pytestmark = pytest.mark.nodb


def test_cohen_kappa_textbook_yes_no():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15.
    # po = 35/50 = 0.7; A yes 25/50, B yes 30/50 -> pe = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2/0.5 = 0.4
    a = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_three_labels_by_hand():
    # 6 items. A: acc acc acc rej rej nc ; B: acc acc rej rej nc nc
    # agree on items 1,2,4,6 -> po = 4/6
    # A marginals: acc 3, rej 2, nc 1; B: acc 2, rej 2, nc 2
    # pe = (3*2 + 2*2 + 1*2) / 36 = 12/36 = 1/3
    # kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    a = ["accepted", "accepted", "accepted", "rejected", "rejected", "needs_changes"]
    b = ["accepted", "accepted", "rejected", "rejected", "needs_changes", "needs_changes"]
    assert cohen_kappa(a, b) == pytest.approx(0.5)


def test_cohen_kappa_edges():
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["x", "x"], ["x", "x"]) == 1.0  # chance agreement 1: perfect agreement
    # complete disagreement on a balanced split: po=0, pe=0.5 -> -1
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_kappa_wikipedia_example():
    # Fleiss (1971) worked example as on Wikipedia: 10 subjects, 14 raters, 5 categories -> 0.210
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_small_by_hand():
    # 3 items, 3 raters, 2 categories: rows [3,0], [2,1], [0,3]
    # P_i = (9-3)/6=1, (4+1-3)/6=1/3, 1  -> P_bar = 7/9
    # p_j = (5/9, 4/9) -> Pe = 25/81 + 16/81 = 41/81
    # kappa = (7/9 - 41/81) / (1 - 41/81) = (63/81 - 41/81) / (40/81) = 22/40 = 0.55
    assert fleiss_kappa([[3, 0], [2, 1], [0, 3]]) == pytest.approx(0.55)
    assert fleiss_kappa([]) is None
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 1], [3, 0]])


def test_fleiss_equals_cohen_like_agreement_for_identical_raters():
    ratings = [["accepted", "accepted"], ["rejected", "rejected"], ["accepted", "accepted"]]
    assert fleiss_kappa(fleiss_table(ratings)) == pytest.approx(1.0)
    assert fleiss_table([["b", "a", "b"]], ["a", "b", "c"]) == [[1, 2, 0]]


def test_edit_distance():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("低秩适配", "低秩適配") == 1
    assert edit_distance_ratio("kitten", "sitting") == pytest.approx(3 / 7)
    assert edit_distance_ratio("", "") == 0.0
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    assert answer_text(msgs) == "a1\n\na2"
