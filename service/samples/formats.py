"""The one place that knows the dataset formats: Alpaca, ShareGPT and OpenAI messages.

Canonical form (what a Sample stores): ``messages`` = list of ``{"role", "content"}`` dicts,
an optional ``system`` first, then ``user``/``assistant`` alternating, ending with ``assistant``.

* ``to_<fmt>(messages)`` writes one record; ``from_<fmt>(record)`` reads one back.
* ``convert_out(messages, fmt)`` / ``parse_record(record, fmt)`` dispatch on the format name.
* For every valid conversation ``c`` and format ``f``:
  ``parse_record(convert_out(c, f), f) == c`` (Alpaca uses ``history`` for earlier turns).
* A top-level ``system`` field that is missing, null or ``""`` means "no system prompt" (the
  LLaMA-Factory reading); a valid canonical system message is therefore non-empty.

Plain dicts and loops only: this runs once per sample when exporting millions of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

Message = dict[str, str]
Format = Literal["alpaca", "sharegpt", "openai"]
FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "openai")
ROLES = frozenset(("system", "user", "assistant"))

_SHAREGPT_IN = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
_SHAREGPT_OUT = {"user": "human", "assistant": "gpt"}


class FormatError(ValueError):
    """A record or conversation that cannot be read or written; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.code = code
        self.message = message
        self.field = field


# --- the canonical conversation rules -----------------------------------------------------


def iter_problems(messages: Any) -> Iterator[FormatError]:
    """Yield every structural problem of a canonical ``messages`` list (not raised).

    Codes: ``missing_messages_list``, ``data_type``, ``message_missing_key``,
    ``message_unrecognized_key``, ``unrecognized_role``, ``missing_content``, ``role_order``
    (first misplaced message only), ``example_missing_assistant_message``, ``turn_count``.
    Empty or whitespace content is a quality issue, left to ``validation``.
    """
    if not isinstance(messages, list) or not messages:
        yield FormatError("missing_messages_list", "messages must be a non-empty list", "messages")
        return
    order_reported = False
    has_assistant = False
    turns = 0  # user/assistant messages seen
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            yield FormatError("data_type", "message must be an object", f"messages[{i}]")
            continue
        if len(msg) != 2 or "role" not in msg or "content" not in msg:
            yield from _key_problems(msg, f"messages[{i}]")
        if "content" in msg and not isinstance(msg["content"], str):
            yield FormatError(
                "missing_content", "content must be a string", f"messages[{i}].content"
            )
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            if "role" in msg:
                yield FormatError(
                    "unrecognized_role",
                    f"role {role!r} is not system, user or assistant",
                    f"messages[{i}].role",
                )
            continue
        if role == "system":
            if i != 0 and not order_reported:
                order_reported = True
                yield FormatError(
                    "role_order", "a system message may only come first", f"messages[{i}].role"
                )
            continue
        expected = "user" if turns % 2 == 0 else "assistant"
        turns += 1
        has_assistant = has_assistant or role == "assistant"
        if role != expected and not order_reported:
            order_reported = True
            yield FormatError(
                "role_order",
                f"expected {expected} here: user and assistant must alternate, starting with user",
                f"messages[{i}].role",
            )
    if not has_assistant:
        yield FormatError(
            "example_missing_assistant_message",
            "the conversation has no assistant message",
            "messages",
        )
    elif turns % 2:
        yield FormatError(
            "turn_count",
            "the conversation must end with an assistant message (user/assistant pairs)",
            "messages",
        )


def _key_problems(msg: dict[str, Any], field: str) -> Iterator[FormatError]:
    if "role" not in msg or "content" not in msg:
        yield FormatError("message_missing_key", "message needs both 'role' and 'content'", field)
    extra = sorted(k for k in msg if k not in ("role", "content"))
    if extra:
        yield FormatError(
            "message_unrecognized_key",
            f"unrecognized keys {extra}; only role and content are kept",
            field,
        )


def _check_structure(messages: Any) -> list[Message]:
    """``messages`` if its structure is a canonical conversation (what every format writes and
    reads back), else raise its first problem. The full rule set a sample must pass (empty
    turns, characters, LLaMA-Factory's drop rules too) is ``validation.check_messages``."""
    for problem in iter_problems(messages):
        raise problem
    return messages


# --- Alpaca -------------------------------------------------------------------------------


def to_alpaca(messages: list[Message], *, allow_history: bool = True) -> dict[str, Any]:
    """``{instruction, input, output[, system][, history]}``; last user turn = ``instruction``."""
    _check_structure(messages)
    system, turns = _split_system(messages)
    if len(turns) > 2 and not allow_history:
        raise FormatError(
            "multi_turn", "a multi-turn conversation needs Alpaca's history field", "messages"
        )
    record: dict[str, Any] = {
        "instruction": turns[-2]["content"],
        "input": "",
        "output": turns[-1]["content"],
    }
    if system is not None:
        record["system"] = system
    if len(turns) > 2:
        record["history"] = [
            [turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 2, 2)
        ]
    return record


def from_alpaca(record: Any) -> list[Message]:
    """Read Alpaca; the last user turn is ``instruction + "\\n" + input`` (either may be empty)."""
    return _check_structure(_read_alpaca(record))


def _read_alpaca(record: Any) -> list[Message]:
    _require_object(record)
    instruction = _string_field(record, "instruction", required=True)
    query = _string_field(record, "input")
    output = _string_field(record, "output", required=True)
    messages = _system_message(record)
    history = record.get("history")
    if history is not None:
        if not isinstance(history, list):
            raise FormatError(
                "data_type", "history must be a list of [user, assistant] pairs", "history"
            )
        for i, pair in enumerate(history):
            if not (
                isinstance(pair, list | tuple)
                and len(pair) == 2
                and all(isinstance(s, str) for s in pair)
            ):
                raise FormatError(
                    "data_type",
                    "each history item must be [user, assistant] strings",
                    f"history[{i}]",
                )
            messages.append({"role": "user", "content": pair[0]})
            messages.append({"role": "assistant", "content": pair[1]})
    user = f"{instruction}\n{query}" if instruction and query else instruction or query or ""
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": output})
    return messages


# --- ShareGPT -----------------------------------------------------------------------------


def to_sharegpt(messages: list[Message]) -> dict[str, Any]:
    """``{conversations: [{from: human|gpt, value}], system?}``; the system prompt is top-level."""
    _check_structure(messages)
    system, turns = _split_system(messages)
    record: dict[str, Any] = {
        "conversations": [{"from": _SHAREGPT_OUT[m["role"]], "value": m["content"]} for m in turns]
    }
    if system is not None:
        record["system"] = system
    return record


def from_sharegpt(record: Any) -> list[Message]:
    """Read ShareGPT: ``from`` human/user, gpt/assistant, system (first turn or ``system`` key)."""
    return _check_structure(_read_sharegpt(record))


def _read_sharegpt(record: Any) -> list[Message]:
    _require_object(record)
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise FormatError(
            "missing_messages_list", "conversations must be a non-empty list", "conversations"
        )
    messages = _system_message(record)
    for i, turn in enumerate(turns):
        field = f"conversations[{i}]"
        if not isinstance(turn, dict):
            raise FormatError("data_type", "each turn must be an object", field)
        if "from" not in turn or "value" not in turn:
            raise FormatError("message_missing_key", "turn needs both 'from' and 'value'", field)
        extra = sorted(k for k in turn if k not in ("from", "value"))
        if extra:
            raise FormatError(
                "message_unrecognized_key",
                f"unrecognized keys {extra}; only from and value are kept",
                field,
            )
        role = _SHAREGPT_IN.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role is None:
            raise FormatError(
                "unrecognized_role",
                f"from {turn['from']!r} is not human, gpt or system",
                f"{field}.from",
            )
        if role == "system" and i == 0 and messages:
            raise FormatError(
                "duplicate_system",
                "system prompt given both as first turn and top-level field",
                field,
            )
        messages.append({"role": role, "content": turn["value"]})
    return messages


# --- OpenAI -------------------------------------------------------------------------------


def to_openai(messages: list[Message]) -> dict[str, Any]:
    """``{messages: [{role, content}]}`` (a copy; the canonical form itself)."""
    _check_structure(messages)
    return {"messages": [{"role": m["role"], "content": m["content"]} for m in messages]}


def from_openai(record: Any) -> list[Message]:
    """Read ``{messages: [...]}``; only ``role`` and ``content`` keys are accepted."""
    return _check_structure(_read_openai(record))


def _read_openai(record: Any) -> list[Message]:
    _require_object(record)
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise FormatError("missing_messages_list", "messages must be a non-empty list", "messages")
    return [dict(m) if isinstance(m, dict) else m for m in messages]


# --- dispatch -----------------------------------------------------------------------------

_WRITERS = {"alpaca": to_alpaca, "sharegpt": to_sharegpt, "openai": to_openai}
_READERS = {"alpaca": _read_alpaca, "sharegpt": _read_sharegpt, "openai": _read_openai}


def convert_out(messages: list[Message], fmt: str) -> dict[str, Any]:
    """Write a canonical conversation as one record of ``fmt``."""
    return _WRITERS[_known(fmt)](messages)


def parse_record(record: Any, fmt: str, *, check: bool = True) -> list[Message]:
    """Read one record of ``fmt`` into canonical messages.

    With ``check=False`` only the record's shape is enforced; the result may break the
    conversation rules (``validation`` uses this to report every problem, not just the first).
    """
    messages = _READERS[_known(fmt)](record)
    return _check_structure(messages) if check else messages


def detect_format(record: Any) -> Format | None:
    """Guess a record's format from its keys (``messages``, ``conversations``, ``instruction`` +
    ``output``); ``None`` when it has none of them."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    return None


def dataset_info_entry(
    fmt: str, file_name: str, *, has_system: bool = False, has_history: bool = False
) -> dict[str, Any]:
    """LLaMA-Factory ``dataset_info.json`` entry for a file written by ``convert_out(..., fmt)``.

    Name the ``system``/``history`` columns only when some record has them: LLaMA-Factory
    fails on a declared column that the file lacks entirely.
    """
    fmt = _known(fmt)
    if fmt == "alpaca":
        columns = {"prompt": "instruction", "query": "input", "response": "output"}
        if has_system:
            columns["system"] = "system"
        if has_history:
            columns["history"] = "history"
        return {"file_name": file_name, "formatting": "alpaca", "columns": columns}
    if fmt == "sharegpt":
        columns = {"messages": "conversations"}
        if has_system:
            columns["system"] = "system"
        return {
            "file_name": file_name,
            "formatting": "sharegpt",
            "columns": columns,
            "tags": {
                "role_tag": "from",
                "content_tag": "value",
                "user_tag": "human",
                "assistant_tag": "gpt",
                "system_tag": "system",
            },
        }
    return {
        "file_name": file_name,
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


# --- helpers ------------------------------------------------------------------------------


def _known(fmt: str) -> str:
    if fmt not in _WRITERS:
        raise FormatError(
            "unknown_format", f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    return fmt


def _split_system(messages: list[Message]) -> tuple[str | None, list[Message]]:
    if messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return None, messages


def _require_object(record: Any) -> None:
    if not isinstance(record, dict):
        raise FormatError("data_type", f"record must be a JSON object, not {type(record).__name__}")


def _string_field(record: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise FormatError("missing_field", f"missing required field {key!r}", key)
        return ""
    if not isinstance(value, str):
        raise FormatError("data_type", f"{key} must be a string", key)
    return value


def _system_message(record: dict[str, Any]) -> list[Message]:
    """``[system message]`` from a top-level ``system`` field, or ``[]`` when absent or empty."""
    system = record.get("system")
    if system is None or system == "":
        return []
    if not isinstance(system, str):
        raise FormatError("data_type", "system must be a string", "system")
    return [{"role": "system", "content": system}]
