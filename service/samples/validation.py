"""Validation of samples: every problem of a record or conversation, as a list of ``Issue``.

Structure codes come from ``formats.iter_problems`` (OpenAI's chat-format checker codes plus
``role_order`` and ``turn_count``); this module adds the quality codes ``empty_content``,
``empty_response`` and ``too_many_tokens``, ``invalid_characters`` and ``llamafactory_would_drop``.

**The gate.** :func:`gate_issues` / :func:`accept` are the one rule set every way a sample
enters or changes goes through (REST create and edit, review decisions and adjudication,
imports, generation, and the ORM itself as a backstop: ``service/samples/store.py``), and the
one a version build applies before it freezes anything: a conversation passes when it is
well-formed (system first if any, then user/assistant alternating, ending with an assistant
answer), no turn is empty or whitespace only, no text holds a NUL or a lone surrogate, and
neither OpenAI's chat-format checks nor LLaMA-Factory's aligner would refuse or drop it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from service.core.errors import Invalid
from service.core.sanitize import text_problem
from service.samples.formats import FormatError, Message, iter_problems, parse_record
from service.samples.tokens import Tokenizer, get_tokenizer, message_token_stats


@dataclass(frozen=True, slots=True)
class Issue:
    code: str
    message: str
    field: str | None = None

    @classmethod
    def from_error(cls, error: FormatError) -> Issue:
        return cls(error.code, error.message, error.field)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_record(
    record: Any,
    fmt: str,
    *,
    max_tokens: int | None = None,
    tokenizer: Tokenizer | str | None = None,
) -> list[Issue]:
    """All issues of one record of ``fmt``; a record whose shape cannot be read gives one issue."""
    try:
        messages = parse_record(record, fmt, check=False)
    except FormatError as exc:
        return [Issue.from_error(exc)]
    return validate_messages(messages, max_tokens=max_tokens, tokenizer=tokenizer)


def validate_messages(
    messages: Any, *, max_tokens: int | None = None, tokenizer: Tokenizer | str | None = None
) -> list[Issue]:
    """All issues of a canonical conversation; ``[]`` means it is fit to train on.

    ``too_many_tokens`` is checked only when ``max_tokens`` is given and the structure is sound;
    ``tokenizer`` is a tokenizer or its name (default: ``tokens.get_tokenizer()``).
    """
    issues = [Issue.from_error(p) for p in iter_problems(messages)]
    sound = not issues
    if isinstance(messages, list):
        issues.extend(_empty_content_issues(messages))
    if max_tokens is not None and sound:
        issue = _token_issue(messages, max_tokens, tokenizer)
        if issue:
            issues.append(issue)
    return issues


class SampleInvalid(FormatError):
    """A conversation the gate refuses; ``issues`` lists every problem (the first is raised)."""

    def __init__(self, issues: list[Issue]) -> None:
        first = issues[0]
        super().__init__(first.code, first.message, first.field)
        self.issues = issues


def gate_issues(messages: Any) -> list[Issue]:
    """Every reason the gate refuses ``messages`` (canonical form); ``[]``: it may be stored.

    Structure, empty or whitespace-only turns (system prompts included), characters no
    database or JSON encoder takes, and LLaMA-Factory's drop rules (a second opinion on the
    structure rules, which imply it)."""
    issues = validate_messages(messages)
    if not isinstance(messages, list):
        return issues
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        for key in ("role", "content"):
            value = msg.get(key)
            problem = text_problem(value) if isinstance(value, str) else None
            if problem:
                issues.append(Issue("invalid_characters", problem, f"messages[{i}].{key}"))
    if not issues:
        dropped = llamafactory_would_drop(messages)
        if dropped:
            issues.append(Issue("llamafactory_would_drop", dropped, "messages"))
    return issues


def accept(messages: Any) -> list[Message]:
    """The canonical copy of ``messages`` (``role`` and ``content`` only, in that order) if the
    gate lets it through, else raise :class:`SampleInvalid` with every issue."""
    issues = gate_issues(messages)
    if issues:
        raise SampleInvalid(issues)
    return [{"role": m["role"], "content": m["content"]} for m in messages]


_INDEX = re.compile(r"\[(\d+)\]")


def api_field(field_name: str, issue_field: str | None) -> str:
    """``messages[1].content`` under ``body.messages`` as ``body.messages.1.content`` (the
    spelling of the request validation errors)."""
    if not issue_field:
        return field_name
    dotted = _INDEX.sub(r".\1", issue_field)
    head, _, rest = dotted.partition(".")
    if head == "messages":
        return f"{field_name}.{rest}" if rest else field_name
    return f"{field_name}.{dotted}"


def check_messages(messages: Any, field_name: str | None = None) -> list[Message]:
    """The one check of a conversation (the gate, :func:`gate_issues`): ``messages`` itself when
    it is canonical and passes, its canonical copy when it passes with its keys in another
    order. Refused: :class:`SampleInvalid` (a ``FormatError``: the first issue's code, message
    and field; ``issues``: all of them), or, at the API edge (``field_name``, e.g.
    ``body.messages``), a 422 listing every problem with its field (``body.messages.1.content``)."""
    try:
        canonical = accept(messages)
    except SampleInvalid as exc:
        if field_name is None:
            raise
        first = exc.issues[0]
        raise Invalid(
            f"invalid messages: {api_field(field_name, first.field)}: {first.message}",
            details=[{"field": api_field(field_name, i.field), "message": i.message,
                      "code": i.code} for i in exc.issues],
        ) from None
    return messages if all(list(m) == ["role", "content"] for m in messages) else canonical


def llamafactory_would_drop(messages: list[dict[str, Any]]) -> str | Literal[False]:
    """Why LLaMA-Factory's sharegpt/openai converter would skip this conversation, or ``False``.

    Mirrors it: drop a leading system message; then even positions must be user and odd ones
    assistant; the count must be even; an empty conversation is dropped by the preprocessor.
    """
    if messages and _role(messages[0]) == "system":
        messages = messages[1:]
    for i, msg in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if _role(msg) != expected:
            return f"invalid role at position {i}: {_role(msg)!r}, expected {expected!r}"
    if len(messages) % 2:
        return f"invalid message count {len(messages)}: must be user/assistant pairs"
    if not messages:
        return "no user/assistant messages"
    return False


def _empty_content_issues(messages: list[Any]) -> list[Issue]:
    last_assistant = max(
        (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
        default=None,
    )
    issues = []
    for i, msg in enumerate(messages):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, str) or content.strip():
            continue
        if i == last_assistant:
            issues.append(
                Issue(
                    "empty_response",
                    "the final assistant response is empty",
                    f"messages[{i}].content",
                )
            )
        else:
            issues.append(
                Issue(
                    "empty_content", "content is empty or only whitespace", f"messages[{i}].content"
                )
            )
    return issues


def _token_issue(
    messages: list[dict[str, str]], max_tokens: int, tokenizer: Tokenizer | str | None
) -> Issue | None:
    tok = (
        tokenizer
        if tokenizer is not None and not isinstance(tokenizer, str)
        else get_tokenizer(tokenizer)
    )
    total = message_token_stats(messages, tok)["total"]
    if total <= max_tokens:
        return None
    return Issue(
        "too_many_tokens",
        f"{total} tokens ({tok.name}) exceed the limit of {max_tokens}",
        "messages",
    )


def _role(msg: Any) -> Any:
    return msg.get("role") if isinstance(msg, dict) else None
