"""Metric functions against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import asyncio
import math

import pytest

from service.evaluation import metrics
from service.evaluation.metrics import (
    aggregate,
    ascore_sample,
    get_metric,
    register,
    score_sample,
    unregister,
)

# --- exact match ---------------------------------------------------------------------------


def test_exact_match_strips_whitespace_only():
    assert metrics.exact_match("  北京\n", "北京") == 1.0
    assert metrics.exact_match("Beijing", "beijing") == 0.0  # no case folding
    assert metrics.exact_match("北 京", "北京") == 0.0  # inner whitespace counts
    assert metrics.exact_match("", "") == 1.0


# --- char F1 -------------------------------------------------------------------------------


def test_char_f1_chinese_by_hand():
    # pred 机器学习是人工智能的分支 (12 chars), ref 深度学习是机器学习的分支 (12 chars).
    # Shared characters with multiplicity: 机 器 学 习 是 的 分 支 = 8
    # (ref has 学×2 and 习×2 but pred only one of each).
    # P = 8/12, R = 8/12, F1 = 2/3.
    got = metrics.char_f1("机器学习是人工智能的分支", "深度学习是机器学习的分支")
    assert got == pytest.approx(2 / 3)


def test_char_f1_multiplicity_and_whitespace():
    # pred "好 好好" -> 好×3 (space ignored), ref "好" -> 好×1. overlap 1: P=1/3, R=1, F1=0.5
    assert metrics.char_f1("好 好好", "好") == pytest.approx(0.5)
    # pred 北京。 vs ref 北京: P=2/3, R=1 -> F1 = 2*(2/3)/(5/3) = 0.8; punctuation ignored -> 1
    assert metrics.char_f1("北京。", "北京") == pytest.approx(0.8)
    assert metrics.char_f1("北京。", "北京", ignore_punctuation=True) == 1.0


def test_char_f1_empty_cases():
    assert metrics.char_f1("", "") == 1.0
    assert metrics.char_f1("", "北京") == 0.0
    assert metrics.char_f1("北京", "") == 0.0
    assert metrics.char_f1("上海", "北京") == 0.0


# --- keywords ------------------------------------------------------------------------------


def test_keywords_course_task_by_hand():
    # reference: {深度学习, 图像识别, 卷积神经网络, 迁移学习} (4, mixed separators)
    # prediction: {深度学习, 卷积神经网络, 数据增强} (3; the duplicate 深度学习 counts once,
    # "  卷积神经网络 " is stripped)
    # hits = 2 -> P = 2/3, R = 2/4, F1 = 2*(2/3)(1/2)/(2/3+1/2) = (2/3)/(7/6) = 4/7
    reference = "深度学习，图像识别、卷积神经网络,迁移学习"
    prediction = "深度学习、  卷积神经网络 ，数据增强，深度学习"
    got = metrics.keywords(prediction, reference)
    assert got["keyword_precision"] == pytest.approx(2 / 3)
    assert got["keyword_recall"] == pytest.approx(1 / 2)
    assert got["keyword_f1"] == pytest.approx(4 / 7)


def test_keywords_whitespace_punctuation_and_options():
    # "machine   learning" collapses to "machine learning"; the trailing "。" is stripped.
    assert metrics.split_keywords("machine   learning， 数据挖掘。") == {
        "machine learning",
        "数据挖掘",
    }
    # Case folding is opt-in: "NLP" vs "nlp" -> 0 hits by default, 1 hit with casefold.
    assert metrics.keywords("NLP", "nlp")["keyword_f1"] == 0.0
    assert metrics.keywords("NLP", "nlp", casefold=True)["keyword_f1"] == 1.0
    # A custom separator: ";" splits, "," no longer does.
    got = metrics.keywords("a;b,c", "a;b", separators=";")
    # pred {a, "b,c"}, ref {a, b}: 1 hit -> P = 1/2, R = 1/2, F1 = 1/2
    assert got == pytest.approx(
        {"keyword_precision": 0.5, "keyword_recall": 0.5, "keyword_f1": 0.5}
    )


def test_keywords_empty_sets():
    assert metrics.keywords("", "")["keyword_f1"] == 1.0
    assert metrics.keywords("", "深度学习") == {
        "keyword_precision": 0.0,
        "keyword_recall": 0.0,
        "keyword_f1": 0.0,
    }
    assert metrics.keywords("，、", "深度学习")["keyword_recall"] == 0.0


# --- BLEU-4 / ROUGE (LLaMA-Factory's computation) -------------------------------------------


def test_bleu_rouge_identical_is_100():
    text = "机器学习是人工智能的一个分支。"
    got = score_sample(text, text, ["bleu-4", "rouge"])
    assert got == {"bleu-4": 100.0, "rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0}


def test_bleu_rouge_disjoint_is_0():
    got = score_sample("今天天气很好", "股票市场下跌", ["bleu-4", "rouge"])
    assert got == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}


def test_rouge_partial_by_hand():
    # jieba segments deterministically (default dictionary):
    #   hyp 我爱北京天安门 -> 我 / 爱 / 北京 / 天安门       (4 unigrams)
    #   ref 我爱上海      -> 我 / 爱 / 上海               (3 unigrams)
    assert metrics.segment("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    assert metrics.segment("我爱上海") == ["我", "爱", "上海"]
    # ROUGE-1: overlap {我, 爱} = 2; P = 2/4, R = 2/3; F = 2PR/(P+R) = (2/3)/(7/6) = 4/7
    #   -> 57.142857 -> rounded to 4 places as LF does: 57.1429
    # ROUGE-2: bigrams hyp {我爱, 爱北京, 北京天安门} (3), ref {我爱, 爱上海} (2), overlap 1
    #   P = 1/3, R = 1/2, F = (1/3)/(5/6) = 0.4 -> 40.0
    # ROUGE-L: LCS of the word sequences is 我 爱 (2) -> same as ROUGE-1 here: 57.1429
    got = metrics.rouge("我爱北京天安门", "我爱上海")
    assert got["rouge-1"] == pytest.approx(round(100 * 4 / 7, 4))
    assert got["rouge-2"] == pytest.approx(40.0)
    assert got["rouge-l"] == pytest.approx(round(100 * 4 / 7, 4))


def test_bleu_partial_by_hand():
    # Characters: hyp 我爱北京天安门 (7), ref 我爱上海 (4).
    # p1 = 2/7 (我, 爱); p2 = 1/6 (我爱); p3 = 0/5; p4 = 0/4.
    # nltk method3 replaces the k-th zero precision by 1/(2^k * denominator):
    #   p3 -> 1/(2*5) = 1/10, p4 -> 1/(4*4) = 1/16. Hyp longer than ref -> BP = 1.
    # BLEU = (2/7 * 1/6 * 1/10 * 1/16) ** (1/4) = (1/3360) ** 0.25 = 0.131345...
    expected = round(100 * (1 / 3360) ** 0.25, 4)
    assert metrics.bleu4("我爱北京天安门", "我爱上海") == pytest.approx(expected)
    assert expected == pytest.approx(13.1345, abs=1e-4)


def test_bleu_short_identical_strings_follow_lf():
    # LF's character BLEU-4 cannot reach 100 below 4 characters: "ab" has no 3/4-grams, so
    # method3 gives p3 = 1/2, p4 = 1/4 -> (1 * 1 * 1/2 * 1/4) ** 0.25 = 0.594603...
    assert metrics.bleu4("ab", "ab") == pytest.approx(round(100 * (1 / 8) ** 0.25, 4))


def test_empty_strings_score_zero_like_lf():
    for pred, ref in [("", "参考答案"), ("预测", ""), ("", ""), ("   ", "参考")]:
        got = score_sample(pred, ref, ["bleu-4", "rouge"])
        assert got == {"bleu-4": 0.0, "rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}


# --- json_valid / answer_length -------------------------------------------------------------


def test_json_valid_strict_extract_and_schema():
    assert metrics.json_valid('{"a": 1}', "") == 1.0
    assert metrics.json_valid("{'a': 1}", "") == 0.0
    fenced = 'Here:\n```json\n{"a": 1}\n```'
    assert metrics.json_valid(fenced, "") == 0.0
    assert metrics.json_valid(fenced, "", extract=True) == 1.0
    schema = {"type": "object", "required": ["score"], "properties": {"score": {"type": "integer"}}}
    assert metrics.json_valid('{"score": 3}', "", schema=schema) == 1.0
    assert metrics.json_valid('{"score": "3"}', "", schema=schema) == 0.0
    assert metrics.json_valid('{"note": 1}', "", schema=schema, extract=True) == 0.0


def test_answer_length_counts_characters():
    assert metrics.answer_length(" 深度学习 \n", "") == 4.0
    assert get_metric("answer_length").higher_is_better is None


# --- registry, scoring, aggregation --------------------------------------------------------


def test_registry_lists_builtins_with_metadata():
    names = {m.name for m in metrics.list_metrics()}
    assert {
        "exact_match",
        "bleu-4",
        "rouge",
        "char_f1",
        "keywords",
        "json_valid",
        "answer_length",
    } <= names
    assert get_metric("rouge-l").name == "rouge"  # an output name resolves to its metric
    assert get_metric("bleu-4").scale == 100.0
    with pytest.raises(metrics.MetricError):
        get_metric("nope")


def test_adding_a_metric_is_one_function():
    @register("test_shouts", description="1 when the prediction is upper case")
    def shouts(prediction: str, reference: str) -> float:
        return float(prediction.isupper())

    try:
        assert score_sample("OK", "", ["test_shouts", "exact_match"]) == {
            "test_shouts": 1.0,
            "exact_match": 0.0,
        }
        with pytest.raises(metrics.MetricError):
            register("test_shouts")(shouts)
    finally:
        unregister("test_shouts")


def test_score_sample_options_and_output_selection():
    got = score_sample("a;b", "a", {"keywords": {"separators": ";"}, "rouge-l": None})
    # keywords: pred {a, b}, ref {a} -> P 1/2, R 1, F1 2/3; only rouge-l of rouge kept
    assert set(got) == {"keyword_precision", "keyword_recall", "keyword_f1", "rouge-l"}
    assert got["keyword_f1"] == pytest.approx(2 / 3)


def test_async_metric_needs_ascore():
    @register("test_async_judge", kind="llm")
    async def judge(prediction: str, reference: str, *, judge_score: float) -> float:
        await asyncio.sleep(0)
        return judge_score

    try:
        with pytest.raises(metrics.MetricError):
            score_sample("x", "y", ["test_async_judge"])
        got = asyncio.run(
            ascore_sample("x", "x", {"test_async_judge": {"judge_score": 4.0}, "exact_match": {}})
        )
        assert got == {"test_async_judge": 4.0, "exact_match": 1.0}
        assert get_metric("test_async_judge").is_async
    finally:
        unregister("test_async_judge")


def test_aggregate_means_skip_missing_and_nan():
    per_sample = [
        {"exact_match": 1.0, "char_f1": 0.5},
        {"exact_match": 0.0, "char_f1": math.nan},
        {"exact_match": 1.0, "char_f1": None, "judge": 4},
        {"exact_match": True},
    ]
    # exact_match: (1+0+1+1)/4 = 0.75; char_f1: only 0.5 counts; judge: 4
    assert aggregate(per_sample) == {"exact_match": 0.75, "char_f1": 0.5, "judge": 4.0}
    assert aggregate([]) == {}
