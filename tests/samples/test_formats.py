import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.samples.formats import (
    FORMATS,
    FormatError,
    convert_out,
    dataset_info_entry,
    detect_format,
    from_alpaca,
    from_openai,
    from_sharegpt,
    parse_record,
    to_alpaca,
    to_openai,
    to_sharegpt,
)
from service.samples.validation import check_messages

CHINESE = "大语言模型微调数据集你好世界：，。！？“”、（）"
texts = st.text(
    st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(CHINESE)), max_size=40
)


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, str]]:
    messages = []
    system = draw(st.none() | texts.filter(bool))
    if system is not None:
        messages.append(msg("system", system))
    for user, assistant in draw(st.lists(st.tuples(texts, texts), min_size=1, max_size=5)):
        messages += [msg("user", user), msg("assistant", assistant)]
    return messages


@pytest.mark.parametrize("fmt", FORMATS)
@given(conversation=conversations())
def test_round_trip(fmt: str, conversation: list[dict[str, str]]) -> None:
    record = convert_out(conversation, fmt)
    assert parse_record(record, fmt) == conversation
    # and through the bytes an export file holds
    assert parse_record(orjson.loads(orjson.dumps(record)), fmt) == conversation


SHAREGPT_TAG = {"system": "system", "user": "human", "assistant": "gpt"}


def unchecked_record(messages: list[dict[str, str]], fmt: str) -> dict:
    if fmt == "openai":
        return {"messages": messages}
    return {
        "conversations": [
            {"from": SHAREGPT_TAG[m["role"]], "value": m["content"]} for m in messages
        ]
    }


@pytest.mark.parametrize("fmt", FORMATS)
@given(conversation=conversations(), data=st.data())
def test_consecutive_same_role_is_rejected(
    fmt: str, conversation: list[dict[str, str]], data: st.DataObject
) -> None:
    first = 1 if conversation[0]["role"] == "system" else 0
    i = data.draw(st.integers(first, len(conversation) - 1))
    broken = conversation[: i + 1] + [dict(conversation[i])] + conversation[i + 1 :]
    with pytest.raises(FormatError) as err:
        convert_out(broken, fmt)
    assert err.value.code == "role_order"
    if fmt != "alpaca":  # alpaca cannot even express two user turns in a row
        with pytest.raises(FormatError) as err:
            parse_record(unchecked_record(broken, fmt), fmt)
        assert err.value.code == "role_order"


def test_two_user_turns_in_a_row_is_role_order() -> None:
    with pytest.raises(FormatError) as err:
        from_openai({"messages": [msg("user", "a"), msg("user", "b"), msg("assistant", "c")]})
    assert err.value.code == "role_order"
    assert err.value.field == "messages[1].role"


# --- alpaca -------------------------------------------------------------------------------


def test_alpaca_joins_instruction_and_input_with_newline() -> None:
    record = {
        "instruction": "将以下英文翻译成中文",
        "input": "Large language models are transforming AI.",
        "output": "大语言模型正在改变人工智能。",
    }
    assert from_alpaca(record) == [
        msg("user", "将以下英文翻译成中文\nLarge language models are transforming AI."),
        msg("assistant", "大语言模型正在改变人工智能。"),
    ]


@pytest.mark.parametrize(
    ("instruction", "query", "user"),
    [("指令", "", "指令"), ("指令", None, "指令"), ("", "只有输入", "只有输入"), ("", "", "")],
)
def test_alpaca_empty_parts_are_left_out(instruction: str, query: str | None, user: str) -> None:
    record = {"instruction": instruction, "output": "答"}
    if query is not None:
        record["input"] = query
    assert from_alpaca(record)[0] == msg("user", user)


def test_alpaca_history_and_system() -> None:
    record = {
        "instruction": "第二问",
        "input": "",
        "output": "第二答",
        "system": "你是助手",
        "history": [["第一问", "第一答"]],
    }
    assert from_alpaca(record) == [
        msg("system", "你是助手"),
        msg("user", "第一问"),
        msg("assistant", "第一答"),
        msg("user", "第二问"),
        msg("assistant", "第二答"),
    ]


def test_alpaca_out_key_order() -> None:
    single = [msg("user", "q"), msg("assistant", "a")]
    assert list(to_alpaca(single)) == ["instruction", "input", "output"]
    assert to_alpaca(single) == {"instruction": "q", "input": "", "output": "a"}
    multi = [msg("system", "s"), *single, msg("user", "q2"), msg("assistant", "a2")]
    assert list(to_alpaca(multi)) == ["instruction", "input", "output", "system", "history"]
    assert to_alpaca(multi)["history"] == [["q", "a"]]


def test_alpaca_without_history_refuses_multi_turn() -> None:
    multi = [msg("user", "q"), msg("assistant", "a"), msg("user", "q2"), msg("assistant", "a2")]
    with pytest.raises(FormatError) as err:
        to_alpaca(multi, allow_history=False)
    assert err.value.code == "multi_turn"
    assert to_alpaca(multi[:2], allow_history=False) == {
        "instruction": "q",
        "input": "",
        "output": "a",
    }


@pytest.mark.parametrize(
    ("record", "code", "field"),
    [
        ({"input": "x", "output": "y"}, "missing_field", "instruction"),
        ({"instruction": "x"}, "missing_field", "output"),
        ({"instruction": 1, "output": "y"}, "data_type", "instruction"),
        ({"instruction": "x", "output": "y", "history": [["only one"]]}, "data_type", "history[0]"),
        ({"instruction": "x", "output": "y", "system": ["s"]}, "data_type", "system"),
        (["not", "an", "object"], "data_type", None),
    ],
)
def test_alpaca_shape_errors(record: object, code: str, field: str | None) -> None:
    with pytest.raises(FormatError) as err:
        from_alpaca(record)
    assert (err.value.code, err.value.field) == (code, field)


def test_alpaca_empty_system_means_none() -> None:
    assert from_alpaca({"instruction": "q", "output": "a", "system": ""}) == [
        msg("user", "q"),
        msg("assistant", "a"),
    ]


# --- sharegpt -----------------------------------------------------------------------------

COURSE_SHAREGPT = {
    "conversations": [
        {"from": "human", "value": "你能解释一下什么是机器学习吗？"},
        {"from": "gpt", "value": "机器学习是人工智能的一个分支。"},
        {"from": "human", "value": "它主要有哪些类型？"},
        {"from": "gpt", "value": "主要类型包括监督学习、无监督学习、半监督学习和强化学习等。"},
    ]
}


def test_sharegpt_course_example() -> None:
    messages = from_sharegpt(COURSE_SHAREGPT)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert to_sharegpt(messages) == COURSE_SHAREGPT


def test_sharegpt_system_goes_top_level_and_is_read_from_either_place() -> None:
    messages = [msg("system", "系统"), msg("user", "问"), msg("assistant", "答")]
    out = to_sharegpt(messages)
    assert list(out) == ["conversations", "system"]
    assert out["system"] == "系统"
    assert all(turn["from"] != "system" for turn in out["conversations"])
    first_turn = {"conversations": [{"from": "system", "value": "系统"}, *out["conversations"]]}
    assert from_sharegpt(first_turn) == messages


def test_sharegpt_accepts_user_and_assistant_tags() -> None:
    record = {
        "conversations": [{"from": "user", "value": "q"}, {"from": "assistant", "value": "a"}]
    }
    assert from_sharegpt(record) == [msg("user", "q"), msg("assistant", "a")]


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ({"conversations": []}, "missing_messages_list"),
        ({"conversations": [{"from": "observation", "value": "x"}]}, "unrecognized_role"),
        ({"conversations": [{"from": "human"}]}, "message_missing_key"),
        (
            {"conversations": [{"from": "human", "value": "q", "weight": 0}]},
            "message_unrecognized_key",
        ),
        ({"system": "a", "conversations": [{"from": "system", "value": "b"}]}, "duplicate_system"),
        (
            {
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "system", "value": "s"},
                    {"from": "gpt", "value": "a"},
                ]
            },
            "role_order",
        ),
        ({"conversations": [{"from": "human", "value": "q"}]}, "example_missing_assistant_message"),
        (
            {
                "conversations": [
                    {"from": "human", "value": "q"},
                    {"from": "gpt", "value": "a"},
                    {"from": "human", "value": "q"},
                ]
            },
            "turn_count",
        ),
    ],
)
def test_sharegpt_errors(record: dict, code: str) -> None:
    with pytest.raises(FormatError) as err:
        from_sharegpt(record)
    assert err.value.code == code


# --- openai -------------------------------------------------------------------------------


def test_openai_is_the_canonical_form_copied() -> None:
    messages = [
        msg("system", "你是一名专业的营养师。"),
        msg("user", "推荐零食？"),
        msg("assistant", "坚果。"),
    ]
    out = to_openai(messages)
    assert out == {"messages": messages}
    assert out["messages"][0] is not messages[0]
    record = {"messages": messages, "id": 7}  # other top-level keys are ignored
    parsed = from_openai(record)
    assert parsed == messages and parsed[0] is not messages[0]


@pytest.mark.parametrize(
    ("messages", "code"),
    [
        ([], "missing_messages_list"),
        ([msg("user", "q"), {"role": "assistant"}], "message_missing_key"),
        (
            [msg("user", "q"), {"role": "assistant", "content": "a", "name": "x"}],
            "message_unrecognized_key",
        ),
        ([msg("user", "q"), msg("tool", "a")], "unrecognized_role"),
        ([msg("user", "q"), {"role": "assistant", "content": None}], "missing_content"),
        ([msg("user", "q"), {"role": ["assistant"], "content": "a"}], "unrecognized_role"),
        ([msg("assistant", "a"), msg("user", "q")], "role_order"),
    ],
)
def test_openai_errors(messages: list, code: str) -> None:
    with pytest.raises(FormatError) as err:
        from_openai({"messages": messages})
    assert err.value.code == code


def test_check_messages_returns_its_input() -> None:
    messages = [msg("user", "q"), msg("assistant", "a")]
    assert check_messages(messages) is messages


# --- dispatch -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"conversations": []}, "sharegpt"),
        ({"messages": [], "conversations": []}, "openai"),
        ({"conversation": [{"human": "h", "assistant": "a"}]}, None),
        ({"instruction": "i"}, None),
        ("text", None),
    ],
)
def test_detect_format(record: object, fmt: str | None) -> None:
    assert detect_format(record) == fmt


def test_unknown_format_name() -> None:
    with pytest.raises(FormatError) as err:
        convert_out([msg("user", "q"), msg("assistant", "a")], "csv")
    assert err.value.code == "unknown_format"
    with pytest.raises(FormatError):
        parse_record({}, "jsonl")


def test_format_error_carries_code_message_field() -> None:
    err = FormatError("role_order", "bad order", "messages[1].role")
    assert (err.code, err.message, err.field) == ("role_order", "bad order", "messages[1].role")
    assert str(err) == "messages[1].role: bad order"
    assert isinstance(err, ValueError)


def test_dataset_info_entries() -> None:
    assert dataset_info_entry("alpaca", "d.jsonl") == {
        "file_name": "d.jsonl",
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
    alpaca = dataset_info_entry("alpaca", "d.jsonl", has_system=True, has_history=True)
    assert alpaca["columns"]["system"] == "system" and alpaca["columns"]["history"] == "history"
    sharegpt = dataset_info_entry("sharegpt", "d.jsonl", has_system=True)
    assert sharegpt["columns"] == {"messages": "conversations", "system": "system"}
    assert sharegpt["tags"]["user_tag"] == "human" and sharegpt["tags"]["assistant_tag"] == "gpt"
    openai = dataset_info_entry("openai", "keywords_data_sharegpt.jsonl")
    assert openai == {  # the entry the course adds for its messages-style file
        "file_name": "keywords_data_sharegpt.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
            "system_tag": "system",
        },
    }
