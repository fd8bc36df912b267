import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.samples.tokens import SimpleTokenizer
from service.samples.validation import (
    Issue,
    llamafactory_would_drop,
    validate_messages,
    validate_record,
)


def msg(role: str, content: str = "text") -> dict[str, str]:
    return {"role": role, "content": content}


def codes(issues: list[Issue]) -> list[str]:
    return [i.code for i in issues]


GOOD = [msg("system", "你是助手"), msg("user", "问题"), msg("assistant", "回答")]


def test_good_conversation_has_no_issues() -> None:
    assert validate_messages(GOOD) == []
    assert validate_record({"messages": GOOD}, "openai") == []


# The OpenAI chat-format checker's codes, on the record shapes that trigger them.
@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ([GOOD], ["data_type"]),
        ({"messages": []}, ["missing_messages_list"]),
        ({"other": 1}, ["missing_messages_list"]),
        ({"messages": [msg("user"), {"role": "assistant"}]}, ["message_missing_key"]),
        (
            {"messages": [msg("user"), {**msg("assistant"), "weight": 1}]},
            ["message_unrecognized_key"],
        ),
        (
            {"messages": [msg("user"), msg("function")]},
            ["unrecognized_role", "example_missing_assistant_message"],
        ),
        ({"messages": [msg("user"), {"role": "assistant", "content": 5}]}, ["missing_content"]),
        ({"messages": [msg("system"), msg("user")]}, ["example_missing_assistant_message"]),
    ],
)
def test_openai_checker_codes(record: object, expected: list[str]) -> None:
    assert codes(validate_record(record, "openai")) == expected


def test_role_order_and_turn_count() -> None:
    issues = validate_messages([msg("user"), msg("system"), msg("assistant"), msg("user")])
    assert codes(issues) == ["role_order", "turn_count"]
    assert issues[0].field == "messages[1].role"
    assert codes(validate_messages([msg("assistant"), msg("user"), msg("assistant")])) == [
        "role_order",
        "turn_count",
    ]


def test_every_problem_is_reported_not_just_the_first() -> None:
    record = {
        "conversations": [
            {"from": "human", "value": " "},
            {"from": "human", "value": "q"},
            {"from": "gpt", "value": ""},
        ]
    }
    assert codes(validate_record(record, "sharegpt")) == [
        "role_order",
        "turn_count",
        "empty_content",
        "empty_response",
    ]


def test_empty_response_and_empty_content() -> None:
    issues = validate_messages([msg("system", "\n"), msg("user", "q"), msg("assistant", "  \t")])
    assert [(i.code, i.field) for i in issues] == [
        ("empty_content", "messages[0].content"),
        ("empty_response", "messages[2].content"),
    ]
    earlier = [msg("user", ""), msg("assistant", ""), msg("user", "q"), msg("assistant", "a")]
    assert codes(validate_messages(earlier)) == ["empty_content", "empty_content"]


def test_alpaca_record_issues() -> None:
    assert codes(validate_record({"instruction": "q", "input": "", "output": ""}, "alpaca")) == [
        "empty_response"
    ]
    issues = validate_record({"instruction": "q"}, "alpaca")
    assert [(i.code, i.field) for i in issues] == [("missing_field", "output")]


def test_too_many_tokens_with_a_named_tokenizer() -> None:
    messages = [msg("user", "Hello, world!"), msg("assistant", "大模型")]  # 4 + 3 tokens (simple)
    assert validate_messages(messages, max_tokens=7, tokenizer="simple") == []
    issues = validate_messages(messages, max_tokens=6, tokenizer=SimpleTokenizer())
    assert codes(issues) == ["too_many_tokens"]
    assert issues[0].message == "7 tokens (simple) exceed the limit of 6"


def test_tokens_are_not_counted_on_a_broken_structure() -> None:
    assert codes(validate_messages([msg("user", "a b c")], max_tokens=1, tokenizer="simple")) == [
        "example_missing_assistant_message"
    ]


def test_issue_as_dict() -> None:
    assert Issue("empty_content", "m", "messages[0].content").as_dict() == {
        "code": "empty_content",
        "message": "m",
        "field": "messages[0].content",
    }


# --- LLaMA-Factory ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("roles", "dropped"),
    [
        (["user", "assistant"], False),
        (["system", "user", "assistant", "user", "assistant"], False),
        ([], "no user/assistant messages"),
        (["system"], "no user/assistant messages"),
        (["user"], "invalid message count 1: must be user/assistant pairs"),
        (
            ["system", "user", "assistant", "user"],
            "invalid message count 3: must be user/assistant pairs",
        ),
        (["assistant", "user"], "invalid role at position 0: 'assistant', expected 'user'"),
        (["user", "user", "assistant"], "invalid role at position 1: 'user', expected 'assistant'"),
        (
            ["user", "system", "assistant"],
            "invalid role at position 1: 'system', expected 'assistant'",
        ),
        (
            ["system", "system", "user", "assistant"],
            "invalid role at position 0: 'system', expected 'user'",
        ),
    ],
)
def test_llamafactory_would_drop(roles: list[str], dropped: object) -> None:
    assert llamafactory_would_drop([msg(r) for r in roles]) == dropped


@given(st.lists(st.sampled_from(["system", "user", "assistant"]), max_size=7))
def test_valid_structure_is_exactly_what_llamafactory_keeps(roles: list[str]) -> None:
    messages = [msg(r) for r in roles]
    structural = [
        i for i in validate_messages(messages) if i.code not in ("empty_content", "empty_response")
    ]
    assert bool(llamafactory_would_drop(messages)) == bool(structural)
