"""Prompt templates: rendering user-editable Jinja2 text safely, and the shipped defaults.

Templates are edited by project leads in the browser, so they render in a sandbox
(:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`: no access to private attributes, no
mutation of passed-in objects, bounded ``range``; here also bounded string/list repetition and
powers) with ``StrictUndefined``: a misspelt variable is an error, not an empty string. Optional
variables are written ``{% if heading is defined and heading %}``.

The defaults live in ``templates/prompts/{kind}.{lang}.j2``. Each starts with a Jinja comment
header (invisible in the rendered text) that names its kind, language, parser and variables::

    {#-
    kind: question
    lang: en
    parser: qa_list
    description: ...
    variables: text, n, heading (optional)
    -#}
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "KINDS",
    "PROMPTS_DIR",
    "PromptDefault",
    "PromptError",
    "get_default",
    "list_defaults",
    "render",
    "render_default",
    "template_variables",
    "validate",
]

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "templates" / "prompts"
KINDS = ("question", "answer", "instruction", "dialogue", "keywords", "judge")

_MAX_REPEAT = 1_000_000  # longest string/list a template may build with * (items/chars)
_MAX_POWER = 1_000


class PromptError(ValueError):
    """A template that does not parse, uses an unknown variable, or does something unsafe."""


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > _MAX_POWER:
                raise jinja2.exceptions.SecurityError("exponent too large")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, list, tuple))
                    and isinstance(count, int)
                    and len(seq) * count > _MAX_REPEAT
                ):
                    raise jinja2.exceptions.SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


_env = _Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # prompts are plain text, not HTML
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


@functools.lru_cache(maxsize=256)
def _compile(text: str) -> jinja2.Template:
    try:
        return _env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"template syntax error on line {exc.lineno}: {exc.message}") from None


def render(template_text: str, /, **variables: Any) -> str:
    """Render ``template_text`` with ``variables`` in the sandbox; raises :class:`PromptError`."""
    template = _compile(template_text)
    try:
        return template.render(**variables)
    except jinja2.UndefinedError as exc:
        raise PromptError(f"template variable error: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise PromptError(f"template not allowed: {exc}") from None
    except jinja2.TemplateError as exc:
        raise PromptError(f"template error: {exc}") from None


def template_variables(template_text: str) -> set[str]:
    """Names the template reads from its context (syntax errors raise :class:`PromptError`)."""
    try:
        ast = _env.parse(template_text)
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    return set(meta.find_undeclared_variables(ast))


def validate(template_text: str, *, required: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Check a template before saving it: it parses and reads every name in ``required``.

    Returns the variables it reads.
    """
    names = template_variables(template_text)
    _compile(template_text)
    missing = set(required) - names
    if missing:
        raise PromptError(
            f"template does not use required variable(s): {', '.join(sorted(missing))}"
        )
    return names


# --- shipped defaults -----------------------------------------------------------------------


@dataclass(frozen=True)
class PromptDefault:
    name: str
    """File stem, e.g. ``question.en``."""
    kind: str
    lang: str
    parser: str
    """The :mod:`service.generation.parsers` parser for the model's answer."""
    description: str
    variables: tuple[str, ...]
    """All variables; optional ones are listed in ``optional`` too."""
    optional: tuple[str, ...]
    text: str
    """Full template text (header comment included; it renders to nothing)."""


_HEADER = re.compile(r"\A\{#-?(.*?)-?#\}", re.DOTALL)


def _load(path: Path) -> PromptDefault:
    text = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    match = _HEADER.match(text)
    if match:
        for line in match.group(1).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                header[key.strip()] = value.strip()
    stem_kind, _, stem_lang = path.name.removesuffix(".j2").partition(".")
    variables, optional = [], []
    for item in header.get("variables", "").split(","):
        item = item.strip()
        if not item:
            continue
        name = item.split()[0]
        variables.append(name)
        if "optional" in item:
            optional.append(name)
    return PromptDefault(
        name=path.name.removesuffix(".j2"),
        kind=header.get("kind", stem_kind),
        lang=header.get("lang", stem_lang or "en"),
        parser=header.get("parser", "text"),
        description=header.get("description", ""),
        variables=tuple(variables),
        optional=tuple(optional),
        text=text,
    )


@functools.lru_cache(maxsize=1)
def _defaults() -> tuple[PromptDefault, ...]:
    return tuple(_load(p) for p in sorted(PROMPTS_DIR.glob("*.j2")))


def list_defaults(kind: str | None = None, lang: str | None = None) -> list[PromptDefault]:
    """The shipped default templates, optionally filtered by kind and language."""
    return [
        d
        for d in _defaults()
        if (kind is None or d.kind == kind) and (lang is None or d.lang == lang)
    ]


def get_default(kind: str, lang: str = "en") -> PromptDefault:
    found = list_defaults(kind, lang)
    if not found:
        raise KeyError(f"no default prompt template for kind={kind!r} lang={lang!r}")
    return found[0]


def render_default(kind: str, lang: str = "en", /, **variables: Any) -> str:
    return render(get_default(kind, lang).text, **variables)
