"""Output parsers: turn an LLM's text answer into the structure a generation kind needs.

``parse(kind, raw, **options)`` dispatches to one of :data:`PARSERS`:

- ``json``: the first JSON object or array in the text (a bare answer, one inside a ```json
  fence, or one with prose around it), optionally validated against a JSON schema;
- ``regex``: named groups of the first match of a pattern (or of every match);
- ``text``: the stripped text, refusing empty output;
- ``qa_list``: a list of questions from a numbered / bulleted list, one per line, or a JSON
  array of strings.

Every parser raises :class:`ParseFailure` carrying the raw text; :func:`repair_prompt` builds the
follow-up user message that asks the model to fix a malformed answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "PARSERS",
    "ParseFailure",
    "WrongShape",
    "extract_json",
    "get_parser",
    "parse",
    "parse_json",
    "parse_qa_list",
    "parse_regex",
    "parse_text",
    "repair_prompt",
]


class ParseFailure(ValueError):
    """The model's output did not have the expected shape. ``raw`` is the output as received."""

    def __init__(self, message: str, raw: str):
        super().__init__(message)
        self.message = message
        self.raw = raw

    def __reduce__(self):  # picklable across Celery / multiprocessing
        return (type(self), (self.message, self.raw))


class WrongShape(ParseFailure):
    """The output parsed, but not into what the template asked for (a dialogue with fewer
    rounds, an example without an ``output``): repaired like any parse failure."""


# --- json -----------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def _loads_value(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None


def extract_json(raw: str) -> Any:
    """The first JSON object or array in ``raw``.

    Tried in order: the whole stripped text; each fenced block (```json first, then any
    language); the first ``{`` or ``[`` from which a complete JSON value decodes. Raises
    :class:`ParseFailure` when nothing decodes.
    """
    if not isinstance(raw, str):
        raise ParseFailure(f"expected text, got {type(raw).__name__}", str(raw))
    text = raw.strip()
    if not text:
        raise ParseFailure("empty output, expected JSON", raw)
    ok, value = _loads_value(text)
    if ok and isinstance(value, (dict, list)):
        return value
    fences = _FENCE.findall(text)
    fences.sort(key=lambda f: 0 if f[0].lower() in ("json", "jsonc", "json5") else 1)
    for _, body in fences:
        found, value = _first_value(body)
        if found:
            return value
    found, value = _first_value(text)
    if found:
        return value
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=None)
    if start is None:
        raise ParseFailure("no JSON object or array found in the output", raw)
    try:
        _DECODER.raw_decode(text, start)
    except ValueError as exc:
        raise ParseFailure(f"malformed JSON in the output: {exc}", raw) from None
    raise ParseFailure("no JSON object or array found in the output", raw)  # pragma: no cover


def _first_value(text: str) -> tuple[bool, Any]:
    """First position where a JSON object/array decodes completely (raw_decode)."""
    pos = 0
    while True:
        candidates = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not candidates:
            return False, None
        start = min(candidates)
        try:
            value, _ = _DECODER.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        return True, value


def _validate(value: Any, schema: Mapping[str, Any], raw: str) -> None:
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - jsonschema is a dependency
        raise RuntimeError("validating against a JSON schema needs the jsonschema package") from exc
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise ParseFailure(f"JSON does not match the schema at {where}: {err.message}", raw)


def parse_json(raw: str, *, schema: Mapping[str, Any] | None = None) -> Any:
    """Extract the first JSON object/array (see :func:`extract_json`); validate if ``schema``."""
    value = extract_json(raw)
    if schema is not None:
        _validate(value, schema, raw)
    return value


# --- regex ----------------------------------------------------------------------------------


def parse_regex(
    raw: str, *, pattern: str | re.Pattern[str], flags: int = 0, all_matches: bool = False,
    group: str | None = None,
) -> Any:
    """Named groups of the first match (``all_matches=True``: of every match, at least one).

    ``group``: just that group's text, stripped (a list of them with ``all_matches``), e.g. the
    keyword line of an answer that may open with "Keywords:"; an empty group is a failure.
    """
    regex = re.compile(pattern, flags) if isinstance(pattern, str) else pattern
    if not regex.groupindex:
        raise ValueError("regex parser needs a pattern with named groups (?P<name>...)")
    if group is not None:
        if group not in regex.groupindex:
            raise ValueError(f"regex parser: the pattern has no group named {group!r}")
        found = parse_regex(raw, pattern=regex, all_matches=all_matches)
        values = [(m.get(group) or "").strip() for m in (found if all_matches else [found])]
        if not all(values):
            raise ParseFailure(f"the {group!r} part of the output is empty", raw)
        return values if all_matches else values[0]
    if all_matches:
        found = [m.groupdict() for m in regex.finditer(raw)]
        if not found:
            raise ParseFailure(f"output does not match the pattern {regex.pattern!r}", raw)
        return found
    match = regex.search(raw)
    if match is None:
        raise ParseFailure(f"output does not match the pattern {regex.pattern!r}", raw)
    return match.groupdict()


# --- text -----------------------------------------------------------------------------------


def parse_text(raw: str, *, strip: bool = True, allow_empty: bool = False) -> str:
    text = raw.strip() if strip else raw
    if not allow_empty and not text.strip():
        raise ParseFailure("empty output", raw)
    return text


# --- qa_list --------------------------------------------------------------------------------

# "1." "1)" "1、" "(1)" "（1）" "Q1:" "Q1." "问题1：" "- " "* " "• "
_ITEM_PREFIX = re.compile(
    r"""^\s*(?:
        [-*•·]\s+
      | [(（]?\d{1,3}\s*[.)）、:：．]\s*
      | [(（]\d{1,3}[)）]\s*
      | (?:Q|q|Question|question|问题|问)\s*\d{0,3}\s*[.:：)）、]\s*
    )+""",
    re.VERBOSE,
)
_QUESTION_KEYS = ("question", "q", "问题", "instruction")


def parse_qa_list(raw: str, *, min_items: int = 1, max_items: int | None = None) -> list[str]:
    """Questions from a numbered/bulleted list (one per line) or a JSON array.

    A JSON array may hold strings or objects with a ``question`` key. Numbering and bullets are
    removed; when some lines are numbered or bulleted, unnumbered lines (preambles such as
    "Here are the questions:") are dropped; blank lines and exact duplicates are dropped (order
    kept). Fewer than ``min_items``
    questions is a failure; more than ``max_items`` are truncated.
    """
    items: list[str] = []
    text = raw.strip()
    value: Any = None
    if "[" in text or "{" in text:
        try:
            value = extract_json(text)
        except ParseFailure:
            value = None
    if isinstance(value, dict):
        for key in ("questions", "items", "data", "问题"):
            if isinstance(value.get(key), list):
                value = value[key]
                break
    if isinstance(value, list):
        for entry in value:
            if isinstance(entry, str):
                items.append(entry)
            elif isinstance(entry, dict):
                for key in _QUESTION_KEYS:
                    if isinstance(entry.get(key), str):
                        items.append(entry[key])
                        break
    if not items:
        lines = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("```")
        ]
        listed = [line for line in lines if _ITEM_PREFIX.match(line)]
        # When the model numbered or bulleted its questions, the other lines are chatter
        # ("Here are the questions:"); otherwise every line is a question.
        items.extend(listed or lines)

    seen: set[str] = set()
    questions: list[str] = []
    for item in items:
        question = _ITEM_PREFIX.sub("", item).strip().strip('"“”').strip()
        if question and question not in seen:
            seen.add(question)
            questions.append(question)
    if len(questions) < min_items:
        raise ParseFailure(
            f"expected at least {min_items} question(s), found {len(questions)}", raw
        )
    if max_items is not None:
        questions = questions[:max_items]
    return questions


# --- registry and repair --------------------------------------------------------------------

PARSERS: dict[str, Callable[..., Any]] = {
    "json": parse_json,
    "regex": parse_regex,
    "text": parse_text,
    "qa_list": parse_qa_list,
}


def get_parser(kind: str) -> Callable[..., Any]:
    try:
        return PARSERS[kind]
    except KeyError:
        raise ValueError(f"unknown parser {kind!r}; known: {', '.join(sorted(PARSERS))}") from None


def parse(kind: str, raw: str, **options: Any) -> Any:
    """``parse("json", text, schema=...)``: run the parser named ``kind``."""
    return get_parser(kind)(raw, **options)


_MAX_ECHO = 4000

_REPAIR = {
    "en": (
        "Your previous answer could not be used: {error}\n\n"
        "Previous answer:\n<<<\n{raw}\n>>>\n\n"
        "Reply again with the corrected answer only{expected}, with no explanation and no "
        "text before or after it."
    ),
    "zh": (
        "你上一次的回答无法解析：{error}\n\n"
        "上一次的回答：\n<<<\n{raw}\n>>>\n\n"
        "请只输出修正后的答案{expected}，不要解释，也不要在前后添加其他文字。"
    ),
}


def repair_prompt(
    raw: str,
    error: str | BaseException,
    *,
    expected: str | None = None,
    schema: Mapping[str, Any] | None = None,
    lang: str = "en",
) -> str:
    """The user message to send after a malformed answer, asking the model to fix it.

    Append it (after the assistant's bad answer, or in a fresh conversation) and parse the new
    answer with the same parser. ``expected`` names the format (``"valid JSON"``); a ``schema``
    is shown to the model. Long answers are cut to keep the prompt bounded.
    """
    message = error.message if isinstance(error, ParseFailure) else str(error)
    shown = (
        raw if len(raw) <= _MAX_ECHO else raw[: _MAX_ECHO // 2] + "\n…\n" + raw[-_MAX_ECHO // 2 :]
    )
    hint = ""
    if expected or schema is not None:
        if lang == "zh":
            hint = f"（{expected or 'JSON'}）"
        else:
            hint = f" as {expected or 'JSON'}"
        if schema is not None:
            hint += (
                (
                    "，须符合以下 JSON Schema：\n"
                    if lang == "zh"
                    else " matching this JSON Schema:\n"
                )
                + json.dumps(schema, ensure_ascii=False, indent=2)
                + "\n"
            )
    template = _REPAIR.get(lang, _REPAIR["en"])
    return template.format(error=message, raw=shown, expected=hint)
