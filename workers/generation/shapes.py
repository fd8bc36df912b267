"""What a generation template's contract asks of the model's parsed answer, checked before any
sample is made (``llm.parsed_loop``'s ``check``: a wrong shape is sent back for repair, like a
parse failure): at most ``n`` questions or examples, each example an object of strings, a
dialogue of user/assistant turns with the requested rounds (longer ones are cut to them).

Each check returns the value to keep or raises :class:`parsers.WrongShape` with a message that
says what was expected and what came, never a bare ``TypeError``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.generation.parsers import WrongShape

Check = Callable[[Any, str], Any]


def _kind_of(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null",
            bool: "a boolean"}.get(type(value), "a number")


def questions(n: int) -> Check:
    def check(value: Any, raw: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(q, str) for q in value):
            raise WrongShape("expected a list of questions", raw)
        return value[:n]
    return check


def instructions(n: int) -> Check:
    def check(value: Any, raw: str) -> list[dict[str, str]]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise WrongShape("expected at least one example, got an empty list", raw)
        for i, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise WrongShape(f"example {i}: expected an object with \"instruction\", "
                                 f"\"input\" and \"output\", got {_kind_of(item)}", raw)
            for key in ("instruction", "input", "output"):
                got = item.get(key, "" if key == "input" else None)
                if not isinstance(got, str):
                    raise WrongShape(f"example {i}: \"{key}\" must be a string, got "
                                     f"{_kind_of(got) if key in item else 'nothing'}", raw)
        return items[:n]
    return check


def dialogue(rounds: int) -> Check:
    def check(value: Any, raw: str) -> list[dict[str, str]]:
        msgs = value.get("messages") if isinstance(value, dict) else value
        if not isinstance(msgs, list):
            raise WrongShape('expected {"messages": [...]} (a list of messages), got '
                             f"{_kind_of(msgs) if isinstance(value, dict) else _kind_of(value)}",
                             raw)
        out: list[dict[str, str]] = []
        for i, m in enumerate(msgs):
            role = "user" if i % 2 == 0 else "assistant"
            if not isinstance(m, dict) or not isinstance(m.get("content"), str):
                raise WrongShape(f'messages[{i}]: expected {{"role": "{role}", "content": '
                                 '"..."}', raw)
            if m.get("role") != role:
                raise WrongShape(f"messages[{i}]: expected role {role!r}, got "
                                 f"{m.get('role')!r} (user and assistant alternate, user first)",
                                 raw)
            out.append({"role": role, "content": m["content"]})
        got = len(out) // 2
        if got < rounds:
            raise WrongShape(f"asked for {rounds} round(s) (user then assistant), the dialogue "
                             f"has {got}", raw)
        return out[:2 * rounds]
    return check


def for_kind(kind: str, variables: dict[str, Any]) -> Check | None:
    """The check for a first-stage template of ``kind`` rendered with ``variables``."""
    if kind == "question":
        return questions(max(1, int(variables.get("n") or 1)))
    if kind == "instruction":
        return instructions(max(1, int(variables.get("n") or 1)))
    if kind == "dialogue":
        return dialogue(max(1, int(variables.get("rounds") or 1)))
    return None
