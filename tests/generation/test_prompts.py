from __future__ import annotations

import pytest

from service.generation import parsers, prompts
from service.generation.prompts import PromptError, render

SAMPLE_VARS = {
    "text": "LoRA 在冻结的权重旁训练低秩矩阵。",
    "n": 3,
    "question": "LoRA 训练什么？",
    "rounds": 2,
    "user_role": "student",
    "assistant_role": "teacher",
    "prediction": "低秩矩阵",
    "reference": "低秩矩阵 A 和 B",
    # the diversity steps (service/diversity)
    "outline": "第一章 LoRA\n1.1 低秩分解",
    "excerpts": "LoRA 冻结预训练权重。",
    "levels": 3,
    "leaves": "1. 微调 › LoRA\n2. 微调 › 全参数",
    "answer": "低秩矩阵 A 和 B",
    "title": "lora.md",
    "topic": "参数高效微调",
    "path": "参数高效微调 › LoRA",
    "genre": "考试题",
    "audience": "学生",
}


def test_every_kind_has_english_and_chinese_defaults():
    found = {(d.kind, d.lang) for d in prompts.list_defaults()}
    for kind in prompts.KINDS:
        assert (kind, "en") in found and (kind, "zh") in found, kind
    assert {d.lang for d in prompts.list_defaults(lang="zh")} == {"zh"}
    assert [d.kind for d in prompts.list_defaults(kind="judge")] == ["judge", "judge"]


@pytest.mark.parametrize("default", prompts.list_defaults(), ids=lambda d: d.name)
def test_defaults_render_and_declare_their_variables(default):
    assert default.parser in parsers.PARSERS
    assert default.description
    used = prompts.template_variables(default.text)
    assert used == set(default.variables), default.name
    required = {v: SAMPLE_VARS[v] for v in default.variables if v not in default.optional}
    out = render(default.text, **required)
    assert out.strip()
    assert "{{" not in out and "{#" not in out and "kind:" not in out  # header is a comment
    for name, value in required.items():
        if name in ("rounds",):
            continue
        assert str(value) in out, (default.name, name)
    # A missing required variable is an error, never an empty string.
    if required:
        missing = dict(required)
        missing.pop(next(iter(required)))
        with pytest.raises(PromptError):
            render(default.text, **missing)


def test_keyword_template_is_the_course_prompt_exactly():
    text = "本文研究了基于深度学习的图像识别方法。"
    out = prompts.render_default("keywords", "zh", text=text)
    assert out == "抽取出下文中的关键词：\n" + text


def test_optional_variables():
    q = prompts.get_default("question", "en")
    without = render(q.text, text="T", n=2)
    with_heading = render(q.text, text="T", n=2, heading="Chapter 1 > Intro")
    assert "Section:" not in without
    assert "Section: Chapter 1 > Intro" in with_heading
    judge = prompts.get_default("judge", "zh")
    assert "参考答案" not in render(judge.text, question="q", prediction="p")
    assert "参考答案" in render(judge.text, question="q", prediction="p", reference="r")
    dialogue = render(
        prompts.get_default("dialogue", "en").text,
        text="T",
        rounds=3,
        user_role="patient",
        assistant_role="doctor",
        scenario="a follow-up visit",
    )
    assert "exactly 6 messages" in dialogue and "Scenario: a follow-up visit" in dialogue


def test_strict_undefined_and_syntax_errors():
    with pytest.raises(PromptError, match="undefined|not defined|variable"):
        render("Hello {{ name }}")
    with pytest.raises(PromptError, match="syntax"):
        render("Hello {{ name ")
    with pytest.raises(PromptError):
        prompts.validate("{% if x %}")
    assert prompts.validate("{{ text }} {{ n }}", required={"text"}) == {"text", "n"}
    with pytest.raises(PromptError, match="required"):
        prompts.validate("{{ n }}", required={"text"})


def test_sandbox_blocks_unsafe_templates():
    with pytest.raises(PromptError):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(PromptError):
        render("{{ x.__init__.__globals__ }}", x=object())
    items: list[int] = []
    with pytest.raises(PromptError):
        render("{{ items.append(1) }}", items=items)  # passed-in objects are immutable
    assert items == []
    with pytest.raises(PromptError):
        render("{{ 'a' * 100000000 }}")
    with pytest.raises(PromptError):
        render("{{ 10 ** 100000 }}")
    # Normal use still works, without HTML escaping (prompts are plain text).
    assert render("{{ a }} & {{ b|upper }}", a="<x>", b="y") == "<x> & Y"
