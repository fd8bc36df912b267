from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.generation import parsers
from service.generation.parsers import ParseFailure, parse, repair_prompt

# --- json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ('{"a": 1}', {"a": 1}),
        ("  [1, 2]\n", [1, 2]),
        ('```json\n{"q": "什么是机器学习？"}\n```', {"q": "什么是机器学习？"}),
        ('Sure! Here it is:\n```\n[{"x": 1}]\n```\nHope it helps.', [{"x": 1}]),
        (
            'The answer is {"score": 4, "rationale": "good"} as requested.',
            {"score": 4, "rationale": "good"},
        ),
        ('noise { not json } then {"ok": true}', {"ok": True}),
        ('```python\nx = {1}\n```\n```json\n{"b": 2}\n```', {"b": 2}),  # json fence first
        ('{"nested": {"list": [1, {"k": "v"}]}} trailing', {"nested": {"list": [1, {"k": "v"}]}}),
    ],
)
def test_json_extracts_first_object_or_array(raw, expected):
    assert parse("json", raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "no json here", '{"a": 1', "```json\n{'a': 1}\n```", "42", '"just a string"'],
)
def test_json_failures_carry_raw(raw):
    with pytest.raises(ParseFailure) as info:
        parse("json", raw)
    assert info.value.raw == raw
    assert info.value.message


def test_json_schema_validation():
    schema = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["instruction", "output"],
            "properties": {"instruction": {"type": "string"}, "output": {"type": "string"}},
        },
    }
    ok = '[{"instruction": "总结", "input": "", "output": "……"}]'
    assert parse("json", ok, schema=schema)[0]["instruction"] == "总结"
    with pytest.raises(ParseFailure) as info:
        parse("json", '[{"instruction": "x"}]', schema=schema)
    assert "output" in str(info.value)
    assert "0" in str(info.value)  # where: the first item


def test_parse_failure_pickles():
    failure = ParseFailure("bad", "raw text")
    again = pickle.loads(pickle.dumps(failure))
    assert (again.message, again.raw) == ("bad", "raw text")


# --- regex / text --------------------------------------------------------------------------


def test_regex_named_groups():
    pattern = r"问题[:：]\s*(?P<question>.+?)\s*答案[:：]\s*(?P<answer>.+)"
    got = parse("regex", "问题：什么是LoRA？ 答案：一种低秩适配方法", pattern=pattern)
    assert got == {"question": "什么是LoRA？", "answer": "一种低秩适配方法"}
    many = parse("regex", "k=1 k=2", pattern=r"k=(?P<v>\d)", all_matches=True)
    assert many == [{"v": "1"}, {"v": "2"}]
    with pytest.raises(ParseFailure):
        parse("regex", "nothing", pattern=r"k=(?P<v>\d)")
    with pytest.raises(ValueError):
        parse("regex", "k=1", pattern=r"k=(\d)")  # no named group


def test_text():
    assert parse("text", "  答案  \n") == "答案"
    with pytest.raises(ParseFailure):
        parse("text", " \n ")


# --- qa_list -------------------------------------------------------------------------------


def test_qa_list_numbered_and_bulleted():
    raw = """Here are the questions:
1. What is LoRA?
2) Why quantize to 4 bits?
- What does the adapter store?
* What does the adapter store?
Q5: Which layers are adapted?
"""
    got = parse("qa_list", raw)
    assert got == [
        "What is LoRA?",
        "Why quantize to 4 bits?",
        "What does the adapter store?",
        "Which layers are adapted?",
    ]


def test_qa_list_plain_lines():
    assert parse("qa_list", "What is LoRA?\nWhy 4 bits?\n") == ["What is LoRA?", "Why 4 bits?"]


def test_qa_list_chinese_numbering():
    raw = "1、什么是机器学习？\n（2）监督学习需要什么？\n问题3：深度学习有哪些应用？\n\n"
    assert parse("qa_list", raw) == [
        "什么是机器学习？",
        "监督学习需要什么？",
        "深度学习有哪些应用？",
    ]


def test_qa_list_json_forms_and_limits():
    assert parse("qa_list", '["A?", "B?"]') == ["A?", "B?"]
    assert parse(
        "qa_list", '```json\n{"questions": [{"question": "A?"}, {"question": "B?"}]}\n```'
    ) == [
        "A?",
        "B?",
    ]
    assert parse("qa_list", "1. A?\n2. B?\n3. C?", max_items=2) == ["A?", "B?"]
    with pytest.raises(ParseFailure):
        parse("qa_list", "1. A?", min_items=2)
    with pytest.raises(ParseFailure):
        parse("qa_list", "   ")


def test_unknown_parser():
    with pytest.raises(ValueError):
        parse("yaml", "a: 1")


# --- repair --------------------------------------------------------------------------------


def test_repair_prompt_mentions_error_and_raw():
    try:
        parse("json", '{"score": 4, "rationale": ')
    except ParseFailure as failure:
        prompt = repair_prompt(failure.raw, failure, expected="JSON")
    assert "could not be used" in prompt
    assert '{"score": 4, "rationale": ' in prompt
    assert "JSON" in prompt
    schema = {"type": "object", "required": ["score"]}
    zh = repair_prompt("oops", "bad", schema=schema, lang="zh")
    assert "无法解析" in zh and '"required"' in zh


def test_repair_prompt_bounds_long_output():
    raw = "x" * 50_000
    prompt = repair_prompt(raw, "too long")
    assert len(prompt) < 6_000
    assert parsers.repair_prompt("a", ValueError("boom")).count("boom") == 1


# --- property: any JSON object survives being wrapped in chatter or a fence ----------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(
    value=st.dictionaries(st.text(max_size=6), _json_values, min_size=1, max_size=4),
    before=st.sampled_from(["", "Here you go:\n", "好的，结果如下：", "Sure (see below)\n"]),
    fenced=st.booleans(),
    ascii_only=st.booleans(),
)
def test_json_roundtrip_in_chatter(value, before, fenced, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only)
    raw = before + (f"```json\n{body}\n```" if fenced else body) + "\nDone."
    assert parse("json", raw) == value


# --- regex: one group as the answer ------------------------------------------------------------

KEYWORD_LINE = r"^\s*(?:keywords?|关键词)?\s*[:：]?\s*(?P<keywords>[^\n]+)"


@pytest.mark.parametrize("raw, expected", [
    ("Keywords: rice; straw return\nThese are the main topics.", "rice; straw return"),
    ("关键词：水稻;秸秆还田", "水稻;秸秆还田"),
    ("  rice, maize  ", "rice, maize"),
])
def test_regex_group_is_the_answer(raw, expected):
    assert parse("regex", raw, pattern=KEYWORD_LINE, flags=2, group="keywords") == expected


def test_regex_group_failures():
    with pytest.raises(ParseFailure):
        parse("regex", "Keywords:   ", pattern=r"Keywords:(?P<k>[^\n]*)", group="k")
    with pytest.raises(ValueError, match="no group named"):
        parse("regex", "x", pattern=r"(?P<a>x)", group="b")
    assert parse("regex", "a=1 a=2", pattern=r"a=(?P<v>\d)", all_matches=True,
                 group="v") == ["1", "2"]
