import io
import json

import orjson
import pytest

from service.samples import importing
from service.samples.formats import FormatError, to_sharegpt
from service.samples.importing import ImportItem, iter_records, parse_mapping, plan_import


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def jsonl(*records: object) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def read(data: bytes, filename: str, **kwargs: object) -> list[ImportItem]:
    return list(iter_records(io.BytesIO(data), filename, **kwargs))


def openai_record(i: int) -> dict:
    return {"messages": [msg("user", f"问题 {i}"), msg("assistant", f"回答 {i}")]}


def ten_lines_with_3_and_7_broken() -> bytes:
    lines = [orjson.dumps(openai_record(i)) for i in range(1, 11)]
    lines[2] = b'{"messages": [ oops'
    lines[6] = b"not json at all"
    return b"\n".join(lines) + b"\n"


# --- strict and skip ----------------------------------------------------------------------


def test_strict_reports_every_bad_line_and_accepts_nothing() -> None:
    report = plan_import(read(ten_lines_with_3_and_7_broken(), "data.jsonl"), mode="strict")
    assert report.bad_lines == [3, 7]
    assert [e["code"] for e in report.errors()] == ["invalid_json", "invalid_json"]
    assert report.accepted == [] and report.valid == 8 and not report.ok


def test_skip_accepts_the_valid_lines_and_reports_the_skipped() -> None:
    report = plan_import(read(ten_lines_with_3_and_7_broken(), "data.jsonl"), mode="skip")
    assert len(report.accepted) == 8
    assert [i.line for i in report.accepted] == [1, 2, 4, 5, 6, 8, 9, 10]
    assert report.accepted[0].messages == openai_record(1)["messages"]
    assert [(e["line"], e["code"]) for e in report.errors()] == [
        (3, "invalid_json"),
        (7, "invalid_json"),
    ]


def test_clean_file_in_strict_mode_is_accepted() -> None:
    report = plan_import(read(jsonl(openai_record(1), openai_record(2)), "d.jsonl"))
    assert report.ok and len(report.accepted) == 2


def test_unknown_mode() -> None:
    with pytest.raises(ValueError):
        plan_import([], mode="lenient")  # type: ignore[arg-type]


# --- jsonl --------------------------------------------------------------------------------


def test_blank_lines_are_ignored_but_counted() -> None:
    data = (
        b"\n"
        + orjson.dumps(openai_record(1))
        + b"\n   \r\n\n"
        + orjson.dumps(openai_record(2))
        + b"\n\n"
    )
    items = read(data, "d.jsonl")
    assert [(i.line, i.error) for i in items] == [(2, None), (5, None)]


def test_bom_crlf_and_bad_utf8() -> None:
    data = b"\xef\xbb\xbf" + orjson.dumps(openai_record(1)) + b"\r\n" + b'{"messages": "\xff"}\r\n'
    items = read(data, "d.ndjson")
    assert items[0].messages == openai_record(1)["messages"]
    assert (items[1].line, items[1].error.code) == (2, "invalid_json")


def test_jsonl_is_streamed() -> None:
    data = io.BytesIO(jsonl(*(openai_record(i) for i in range(1000))))
    items = iter_records(data, "d.jsonl")
    first = next(items)
    assert first.line == 1 and data.tell() < 100


def test_auto_detects_from_the_first_record_that_parses() -> None:
    sharegpt = to_sharegpt([msg("user", "你好"), msg("assistant", "你好！")])
    data = jsonl({"title": "neither"}, {"conversations": "broken"}, sharegpt, openai_record(1))
    items = read(data, "d.jsonl")
    assert [i.error.code if i.error else None for i in items] == [
        "unknown_format",
        "missing_messages_list",
        None,
        "missing_messages_list",  # now fixed to sharegpt
    ]
    assert items[2].messages == [msg("user", "你好"), msg("assistant", "你好！")]
    assert items[2].raw == sharegpt


def test_given_format_is_used_for_every_record() -> None:
    items = read(
        jsonl({"instruction": "q", "output": "a"}, openai_record(1)), "d.jsonl", fmt="alpaca"
    )
    assert items[0].messages == [msg("user", "q"), msg("assistant", "a")]
    assert items[1].error.code == "missing_field"


def test_bad_arguments_raise_before_reading() -> None:
    with pytest.raises(FormatError) as err:
        iter_records(io.BytesIO(b""), "notes.txt")
    assert err.value.code == "unsupported_file"
    with pytest.raises(FormatError) as err:
        iter_records(io.BytesIO(b""), "d.jsonl", fmt="parquet")
    assert err.value.code == "unknown_format"
    with pytest.raises(FormatError) as err:
        iter_records(
            io.BytesIO(b""), "d.jsonl", fmt="openai", mapping={"user": "q", "assistant": "a"}
        )
    assert err.value.code == "invalid_mapping"


# --- field mapping ------------------------------------------------------------------------

KEYWORDS = [  # the course's keyword-extraction data: one record, many independent pairs
    {
        "conversation": [
            {
                "human": "抽取出下文中的关键词：\n目的分析结节性甲状腺肿合并甲状腺微小癌的超声声像图特点。 ",
                "assistant": " 结节性甲状腺肿；甲状腺微小癌；超声\n",
            },
            {
                "human": "抽取出下文中的关键词：\n大语言模型本质上是一种文本生成模型。",
                "assistant": "大语言模型；文本生成",
            },
        ]
    },
    {
        "conversation": [
            {
                "human": "抽取出下文中的关键词：\nLoRA 是参数高效微调方法。",
                "assistant": "LoRA；参数高效微调",
            }
        ]
    },
]
KEYWORDS_MAPPING = {
    "list_field": "conversation",
    "user": "human",
    "assistant": "assistant",
    "system": None,
    "split_items": True,
}


def test_course_keyword_file_gives_one_sample_per_conversation_item() -> None:
    items = read(jsonl(*KEYWORDS), "keywords_data_train.jsonl", mapping=KEYWORDS_MAPPING)
    assert [(i.line, i.source_index, i.error) for i in items] == [
        (1, 0, None),
        (1, 1, None),
        (2, 0, None),
    ]
    assert items[0].messages == [
        msg(
            "user",
            "抽取出下文中的关键词：\n目的分析结节性甲状腺肿合并甲状腺微小癌的超声声像图特点。",
        ),
        msg("assistant", "结节性甲状腺肿；甲状腺微小癌；超声"),
    ]
    assert items[2].messages == [
        msg("user", "抽取出下文中的关键词：\nLoRA 是参数高效微调方法。"),
        msg("assistant", "LoRA；参数高效微调"),
    ]
    assert items[1].raw is items[0].raw


def test_mapping_items_as_one_multi_turn_sample_without_strip() -> None:
    mapping = {**KEYWORDS_MAPPING, "split_items": False, "strip": False}
    items = read(jsonl(KEYWORDS[0]), "d.jsonl", mapping=mapping)
    assert len(items) == 1
    assert [m["role"] for m in items[0].messages] == ["user", "assistant", "user", "assistant"]
    assert items[0].messages[1]["content"] == " 结节性甲状腺肿；甲状腺微小癌；超声\n"


def test_flat_mapping_with_system() -> None:
    mapping = {"user": "question", "assistant": "answer", "system": "sys"}
    data = jsonl(
        {"question": "什么是 RAG？", "answer": "检索增强生成。", "sys": "你是老师"},
        {"question": "q", "answer": "a", "sys": ""},
    )
    items = read(data, "d.jsonl", mapping=mapping)
    assert items[0].messages == [
        msg("system", "你是老师"),
        msg("user", "什么是 RAG？"),
        msg("assistant", "检索增强生成。"),
    ]
    assert items[1].messages == [msg("user", "q"), msg("assistant", "a")]


def test_mapping_errors_point_at_the_item() -> None:
    data = jsonl(
        {"conversation": [{"human": "q", "assistant": "a"}, {"human": "q2"}, "text"]},
        {"conversation": []},
        [1, 2],
    )
    items = read(data, "d.jsonl", mapping=KEYWORDS_MAPPING)
    assert [(i.line, i.source_index, i.error and (i.error.code, i.error.field)) for i in items] == [
        (1, 0, None),
        (1, 1, ("missing_field", "conversation[1].assistant")),
        (1, 2, ("data_type", "conversation[2]")),
        (2, 0, ("missing_messages_list", "conversation")),
        (3, 0, ("data_type", None)),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        {"user": "q"},
        {"user": "q", "assistant": "a", "colour": "red"},
        {"user": "q", "assistant": 3},
        {"user": "q", "assistant": "a", "split_items": "yes"},
        "user=q",
    ],
)
def test_invalid_mappings(spec: object) -> None:
    with pytest.raises(FormatError) as err:
        parse_mapping(spec)  # type: ignore[arg-type]
    assert err.value.code == "invalid_mapping"


# --- json arrays --------------------------------------------------------------------------


def test_json_array_is_decoded_element_by_element(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        importing, "_CHUNK", 7
    )  # elements span many chunks, UTF-8 split mid-character
    records = [openai_record(i) for i in range(30)] + [{"instruction": "长" * 100, "output": "答"}]
    data = io.BytesIO(
        b"\xef\xbb\xbf \n[ " + b" ,\n".join(orjson.dumps(r) for r in records) + b"\n]\n"
    )
    items = iter_records(data, "d.json", fmt="auto")
    assert next(items).messages == records[0]["messages"]
    assert data.tell() < len(data.getvalue()) // 4
    rest = list(items)
    assert [i.line for i in rest] == list(range(2, 32))
    assert rest[-1].error.code == "missing_messages_list"  # read as openai, fixed by the first


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"[]", []),
        (b'{"messages": []}', [(1, "invalid_json")]),
        (b"", [(1, "invalid_json")]),
        (
            b'[{"instruction": "q", "output": "a"}, {"instruction": }, {}]',
            [(1, None), (2, "invalid_json")],
        ),
        (
            b'[{"instruction": "q", "output": "a"} {"instruction": "q"}]',
            [(1, None), (2, "invalid_json")],
        ),
        (b'[{"instruction": "q", "output": "a"}', [(1, None), (2, "invalid_json")]),
        (b'[12345, "x"]', [(1, "data_type"), (2, "data_type")]),
        (b'[{"instruction": "q", "output": "\xff"}]', [(1, "invalid_encoding")]),
    ],
)
def test_json_array_edge_cases(
    monkeypatch: pytest.MonkeyPatch, data: bytes, expected: list
) -> None:
    monkeypatch.setattr(importing, "_CHUNK", 3)
    items = read(data, "d.json", fmt="alpaca")
    assert [(i.line, i.error.code if i.error else None) for i in items] == expected


def test_json_array_matches_json_load() -> None:
    records = [openai_record(i) for i in range(5)]
    data = json.dumps(records, ensure_ascii=False, indent=2).encode()
    assert [i.messages for i in read(data, "d.json")] == [r["messages"] for r in records]


# --- csv ----------------------------------------------------------------------------------


def test_csv_alpaca_columns_with_multiline_cells() -> None:
    data = (
        "\ufeffinstruction,input,output,system\r\n"
        "将以下英文翻译成中文,Hello,你好,\r\n"
        "\r\n"
        '"多行\n指令",,"第一行\n第二行",你是翻译\r\n'
        "only,two\r\n"
        "总结,长文本,摘要,\r\n"
    ).encode()
    items = read(data, "d.csv")
    assert [(i.line, i.error.code if i.error else None) for i in items] == [
        (2, None),
        (4, None),
        (7, "csv_columns"),
        (8, None),  # the row at 4 spans three lines
    ]
    assert items[0].messages == [
        msg("user", "将以下英文翻译成中文\nHello"),
        msg("assistant", "你好"),
    ]
    assert items[1].messages == [
        msg("system", "你是翻译"),
        msg("user", "多行\n指令"),
        msg("assistant", "第一行\n第二行"),
    ]


def test_csv_with_mapping() -> None:
    data = "question,answer\n什么是微调？,在预训练模型上继续训练。\n".encode()
    items = read(data, "qa.CSV", mapping={"user": "question", "assistant": "answer"})
    assert items[0].messages == [
        msg("user", "什么是微调？"),
        msg("assistant", "在预训练模型上继续训练。"),
    ]


def test_csv_bad_encoding_stops_with_an_error() -> None:
    data = b"instruction,output\nq,a\nq2,\xff\n"
    items = read(data, "d.csv")
    assert [(i.line, i.error.code if i.error else None) for i in items] == [
        (2, None),
        (3, "invalid_encoding"),
    ]


# --- parquet ------------------------------------------------------------------------------


def test_parquet_rows() -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    records = [openai_record(i) for i in range(3)]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buf)
    items = read(buf.getvalue(), "d.parquet")
    assert [(i.line, i.messages) for i in items] == [
        (n + 1, r["messages"]) for n, r in enumerate(records)
    ]
