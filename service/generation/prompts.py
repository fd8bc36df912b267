"""Prompt templates: rendering user-editable Jinja2 text safely, and the shipped defaults.

Templates are edited by project leads in the browser, so they render in a sandbox
(:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`: no access to private attributes, no
mutation of passed-in objects, bounded ``range``; here also a budget that counts loop iterations
and calls, a time limit, and bounded string sizes and output: see :class:`_Environment`) with
``StrictUndefined``: a misspelt variable is an error, not an empty string. Optional
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
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
MAX_OUTPUT_CHARS = 2_000_000
"""Longest text one render may produce, and longest string it may build on the way."""
MAX_STEPS = 200_000
"""Loop iterations plus calls (functions, macros, methods) one render may make."""
MAX_SECONDS = 0.5
"""Wall time one render may take (checked at every loop iteration and call)."""

_SIZED_STR_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})
_WIDTH = re.compile(r"%[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


class PromptError(ValueError):
    """A template that does not parse, uses an unknown variable, or does something unsafe;
    ``line``: the template line to blame, when one is."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


MAX_PRODUCED_CHARS = 4 * MAX_OUTPUT_CHARS
"""All ``{{ ... }}`` output of one render, counted where it is produced (block ``set``s and macro
bodies collect theirs in lists before they are joined)."""


class _Budget:
    __slots__ = ("deadline", "max_chars", "max_steps", "produced", "seconds", "steps")

    def __init__(self, *, max_steps: int, seconds: float, max_chars: int) -> None:
        self.steps, self.max_steps, self.seconds, self.max_chars = 0, max_steps, seconds, max_chars
        self.produced = 0
        self.deadline = time.monotonic() + seconds


_state = threading.local()


def _budget() -> _Budget | None:
    return getattr(_state, "budget", None)


def _limit(message: str) -> jinja2.exceptions.SecurityError:
    return jinja2.exceptions.SecurityError(message)


def _tick() -> None:
    budget = _budget()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps > budget.max_steps:
        raise _limit(f"more than {budget.max_steps} loop iterations and calls")
    if time.monotonic() > budget.deadline:
        raise _limit(f"rendering took longer than {budget.seconds:g} s")


def _max_chars() -> int:
    budget = _budget()
    return budget.max_chars if budget is not None else MAX_OUTPUT_CHARS


def _check_size(n: int) -> None:
    if n > _max_chars():
        raise _limit(f"a string longer than {_max_chars()} characters")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else len(str(value))


def _check_format_spec(fmt: str) -> None:
    """``%300000000d`` and friends: refuse widths and precisions beyond the size limit."""
    for match in _WIDTH.finditer(fmt):
        for group in match.groups():
            if group == "*" or (group and int(group) > _max_chars()):
                raise _limit("a format width beyond the size limit")


def _check_str_format(fmt: str) -> None:
    """``'{:>300000000}'.format(x)``: no nested fields in specs, no oversized widths."""
    import string

    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the error itself
    for _text, _name, spec, _conv in fields:
        if not spec:
            continue
        if "{" in spec:
            raise _limit("nested replacement fields in a format spec")
        for number in re.findall(r"\d+", spec):
            if int(number) > _max_chars():
                raise _limit("a format width beyond the size limit")


def _estimate_join(sep: str, items: list[Any]) -> int:
    return sum(_length(i) for i in items) + len(sep) * max(0, len(items) - 1)


def _estimate_replace(text: str, old: str, new: str, count: int = -1) -> int:
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def _guarded_join(parts: Any) -> str:
    """``environment.concat``: the output of a render, a block ``set``, a macro or ``caller()``;
    stops as soon as it grows past the limit (the render is a generator)."""
    limit, total, out = _max_chars(), 0, []
    for part in parts:
        total += len(part)
        if total > limit:
            raise _limit(f"output longer than {limit} characters")
        out.append(part)
    return "".join(out)


def _guarded_concat(*values: Any) -> str:
    """The ``~`` operator."""
    strings = [v if isinstance(v, str) else str(v) for v in values]
    _check_size(sum(len(v) for v in strings))
    return "".join(strings)


def _count_output(value: Any) -> str:
    """``finalize``: every ``{{ ... }}`` value, as it is produced."""
    text = value if isinstance(value, str) else str(value)
    budget = _budget()
    if budget is not None:
        budget.produced += len(text)
        if budget.produced > MAX_PRODUCED_CHARS:
            raise _limit(f"more than {MAX_PRODUCED_CHARS} characters of output produced")
        _tick()
    return text


def _guarded_iter(iterable: Any) -> Any:
    """Every ``{% for %}``: one step of the budget per item."""
    for item in iterable:
        _tick()
        yield item


def _sized_filter(name: str, original: Any) -> Any:
    # replace and join take the eval context first, wordwrap the environment
    skip = 1 if name in ("replace", "join", "wordwrap") else 0

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if name == "join":
            return _guarded_join_filter(original, *args, **kwargs)
        rest = args[skip:]
        value = rest[0] if rest else ""
        text = value if isinstance(value, str) else str(value)
        if name == "center":
            width = rest[1] if len(rest) > 1 else kwargs.get("width", 80)
            _check_size(int(width))
        elif name == "indent":
            width = rest[1] if len(rest) > 1 else kwargs.get("width", 4)
            width = len(width) if isinstance(width, str) else int(width)
            _check_size(len(text) + (text.count("\n") + 1) * width)
        elif name == "replace":
            old = str(rest[1] if len(rest) > 1 else kwargs.get("old", ""))
            new = str(rest[2] if len(rest) > 2 else kwargs.get("new", ""))
            count = rest[3] if len(rest) > 3 else kwargs.get("count")
            _check_size(_estimate_replace(text, old, new, -1 if count is None else int(count)))
        elif name == "wordwrap":
            wrap = rest[3] if len(rest) > 3 else kwargs.get("wrapstring") or "\n"
            _check_size(len(text) * (1 + len(str(wrap))))
        elif name == "format":
            _check_format_spec(text)
        return original(*args, **kwargs)

    return guarded


def _guarded_join_filter(original: Any, eval_ctx: Any, value: Any, d: str = "",
                         attribute: Any = None) -> str:
    items = list(value)
    if attribute is None:
        _check_size(_estimate_join(str(d), items))
    result = original(eval_ctx, items, d, attribute)
    _check_size(len(result))
    return result


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, plus limits that count: loop iterations and calls (one budget), wall time,
    the size of every string built (``*``, ``+``, ``~``, ``%``, sized ``str`` methods and
    filters) and of the output. Exceeding one raises ``SecurityError`` (a :class:`PromptError`)."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])
    concat = staticmethod(_guarded_join)  # type: ignore[assignment]
    guarded_iter = staticmethod(_guarded_iter)
    guarded_concat = staticmethod(_guarded_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name in ("center", "indent", "replace", "wordwrap", "format", "join"):
            self.filters[name] = functools.update_wrapper(
                _sized_filter(name, self.filters[name]), self.filters[name])

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        _instrument(tree)
        return tree

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
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _check_size(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _check_format_spec(left)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _tick()
        target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(owner, str):
            name = getattr(target, "__name__", "")
            if name in _SIZED_STR_METHODS and args:
                _check_size(int(args[0]))
            elif name == "expandtabs":
                size = int(args[0]) if args else int(kwargs.get("tabsize", 8))
                _check_size(len(owner) + owner.count("\t") * size)
            elif name == "replace" and len(args) >= 2:
                count = int(args[2]) if len(args) > 2 else int(kwargs.get("count", -1))
                _check_size(_estimate_replace(owner, str(args[0]), str(args[1]), count))
            elif name == "join" and args:
                items = list(args[0])
                _check_size(_estimate_join(owner, items))
                args = (items, *args[1:])
            elif name in ("format", "format_map"):
                _check_str_format(owner)
        return super().call(context, obj, *args, **kwargs)


def _instrument(node: nodes.Node) -> None:
    """Route every ``for`` through ``guarded_iter`` and every ``~`` through ``guarded_concat``."""
    for field, value in node.iter_fields():
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, nodes.Node):
                    _instrument(item)
                    value[i] = _wrap(item)
        elif isinstance(value, nodes.Node):
            _instrument(value)
            setattr(node, field, _wrap(value))
    if isinstance(node, nodes.For):
        node.iter = nodes.Call(nodes.EnvironmentAttribute("guarded_iter"), [node.iter], [], None,
                               None, lineno=node.lineno)


def _wrap(node: nodes.Node) -> nodes.Node:
    if isinstance(node, nodes.Concat):
        return nodes.Call(nodes.EnvironmentAttribute("guarded_concat"), list(node.nodes), [],
                          None, None, lineno=node.lineno)
    return node


_env = _Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # prompts are plain text, not HTML
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
    finalize=_count_output,
)


@functools.lru_cache(maxsize=256)
def _compile(text: str) -> jinja2.Template:
    try:
        return _env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise _syntax_error(exc) from None


def render(template_text: str, /, **variables: Any) -> str:
    """Render ``template_text`` with ``variables`` in the sandbox; raises :class:`PromptError`,
    also when the render exceeds its budget (steps, time, size: see the module constants)."""
    template = _compile(template_text)
    previous = _budget()
    _state.budget = _Budget(max_steps=MAX_STEPS, seconds=MAX_SECONDS, max_chars=MAX_OUTPUT_CHARS)
    try:
        return template.render(**variables)
    except jinja2.UndefinedError as exc:
        raise PromptError(f"template variable error: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise PromptError(f"template not allowed: {exc}") from None
    except jinja2.TemplateError as exc:
        raise PromptError(f"template error: {exc}") from None
    except MemoryError:
        raise PromptError("template not allowed: it needs too much memory") from None
    except RecursionError:
        raise PromptError("template not allowed: recursion too deep") from None
    except (ArithmeticError, ValueError, TypeError, LookupError, AttributeError) as exc:
        # range(10**9) (OverflowError), int('x'), 1/0, {}['x']...: the template's fault
        raise PromptError(f"template error: {type(exc).__name__}: {exc}") from None
    finally:
        _state.budget = previous


def _syntax_error(exc: jinja2.TemplateSyntaxError) -> PromptError:
    return PromptError(f"template syntax error on line {exc.lineno}: {exc.message}",
                       line=exc.lineno)


def template_variables(template_text: str) -> set[str]:
    """Names the template reads from its context (syntax errors, unknown filters and tests
    raise :class:`PromptError` naming the line)."""
    try:
        ast = _env.parse(template_text)
        _check_names(ast)
        return set(meta.find_undeclared_variables(ast)) - set(_env.globals)
    except jinja2.TemplateSyntaxError as exc:  # also an unknown filter found while compiling
        raise _syntax_error(exc) from None


def _check_names(ast: nodes.Template) -> None:
    """Every filter and test the template names exists (Jinja checks those inside ``{% if %}``
    only when the branch runs)."""
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        known = _env.filters if isinstance(node, nodes.Filter) else _env.tests
        if node.name not in known:
            what = "filter" if isinstance(node, nodes.Filter) else "test"
            raise PromptError(f"unknown {what} {node.name!r} on line {node.lineno}",
                              line=node.lineno)


def _first_use(ast: nodes.Template, names: set[str]) -> tuple[str, int]:
    found = [(n.lineno, n.name) for n in ast.find_all(nodes.Name)
             if n.ctx == "load" and n.name in names]
    line, name = min(found) if found else (1, min(names))
    return name, line


def validate(template_text: str, *, required: set[str] | frozenset[str] = frozenset(),
             provides: set[str] | frozenset[str] | None = None) -> set[str]:
    """Check a template before saving it: it parses, names only known filters and tests,
    compiles, reads every name in ``required`` and, when ``provides`` is given (what the
    template's kind renders it with), no other variable than those and the ones its header
    declares (``variables: ...``, given to a job as ``params.variables``). Raises
    :class:`PromptError` (with ``line`` when one is to blame).

    Returns the variables it reads.
    """
    names = template_variables(template_text)
    _compile(template_text)
    missing = set(required) - names
    if missing:
        raise PromptError(
            f"template does not use required variable(s): {', '.join(sorted(missing))}"
        )
    if provides is not None:
        unknown = names - set(provides) - set(_header_variables(_header(template_text))[0])
        if unknown:
            name, line = _first_use(_env.parse(template_text), unknown)
            raise PromptError(
                f"unknown variable {name!r} on line {line}: this kind of template is rendered "
                f"with {', '.join(sorted(provides))}; declare any other in the header comment "
                "(variables: ...) and give it to the job as params.variables", line=line)
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


def _header(text: str) -> dict[str, str]:
    """The ``key: value`` lines of the template's leading Jinja comment."""
    header: dict[str, str] = {}
    match = _HEADER.match(text)
    if match:
        for line in match.group(1).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                header[key.strip()] = value.strip()
    return header


def _header_variables(header: dict[str, str]) -> tuple[list[str], list[str]]:
    """``variables: text, n, heading (optional)``: all names, and the optional ones."""
    variables, optional = [], []
    for item in header.get("variables", "").split(","):
        item = item.strip()
        if not item:
            continue
        name = item.split()[0]
        variables.append(name)
        if "optional" in item:
            optional.append(name)
    return variables, optional


def _load(path: Path) -> PromptDefault:
    text = path.read_text(encoding="utf-8")
    header = _header(text)
    stem_kind, _, stem_lang = path.name.removesuffix(".j2").partition(".")
    variables, optional = _header_variables(header)
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
