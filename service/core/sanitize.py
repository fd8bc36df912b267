"""One input sanitation layer for every route: what no field may hold, checked before the handler.

``check_request`` is an app-wide dependency (``FastAPI(dependencies=...)`` in service/main.py).
Whatever the route, it refuses with a 422 naming the field:

- a NUL character (PostgreSQL cannot store it in text) or a lone UTF-16 surrogate (not encodable
  as UTF-8) in any string: JSON bodies (keys and values), form fields, upload file names, query
  and path parameters;
- an integer outside signed 64 bits (every id column is BIGINT) in a JSON body or in a path or
  query parameter declared as an integer;
- a JSON string longer than ``MAX_STRING`` characters, an array longer than ``MAX_ITEMS`` or
  nesting deeper than ``MAX_DEPTH`` (backstops; fields document their own tighter
  ``max_length`` in the schema);
- a JSON body that only pydantic's lax mode would take: ``0`` or ``"yes"`` for a boolean,
  ``false`` or ``"7"`` for an integer, a number for a string (``7.0`` is an integer, as in JSON
  Schema). The body is what the OpenAPI
  document says, JSON types included (the route's body model validated in strict mode; what
  lax validation refuses too is left to FastAPI's own 422).

Document text extracted by the parsers is not input of this kind: it is stripped of NULs there
with a warning (``strip_text``). The size of a whole body is capped earlier, while it streams
(service/core/limits.py).
"""
from __future__ import annotations

import json
import re
from typing import Any, get_args

from fastapi import Request
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from service.core.errors import Invalid

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STRING = 1_000_000
MAX_ITEMS = 100_000
MAX_DEPTH = 64
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
# raw JSON that may need a walk: an escaped NUL or surrogate, a raw NUL, a long digit run
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\x00|\d{19}")
_WALK_ABOVE = 64 * 1024  # bodies this large are walked for the length caps anyway


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    found = _BAD_CHARS.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "NUL characters (\\u0000) are not allowed"
    return "lone surrogate characters are not allowed (not valid Unicode text)"


def strip_text(value: str) -> tuple[str, int]:
    """``value`` without NULs and lone surrogates, and how many were removed (for a warning)."""
    cleaned, n = _BAD_CHARS.subn("", value)
    return cleaned, n


def _refuse(field: str, message: str, kind: str) -> Invalid:
    return Invalid(f"invalid request: {field}: {message}",
                   details=[{"field": field, "message": message, "type": kind}])


def check_text(value: str, field: str) -> None:
    problem = text_problem(value)
    if problem:
        raise _refuse(field, problem, "string_characters")


def _check_int(value: int, field: str) -> None:
    if not INT64_MIN <= value <= INT64_MAX:
        raise _refuse(field, "integer out of range (signed 64 bits)", "int_range")


def check_value(value: Any, field: str, depth: int = 0) -> None:
    """Walk a decoded JSON value; raise ``Invalid`` at the first field that cannot be taken."""
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise _refuse(field, f"string longer than {MAX_STRING} characters", "string_too_long")
        check_text(value, field)
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        _check_int(value, field)
    elif depth >= MAX_DEPTH:
        raise _refuse(field, f"nested deeper than {MAX_DEPTH} levels", "too_deep")
    elif isinstance(value, list):
        if len(value) > MAX_ITEMS:
            raise _refuse(field, f"more than {MAX_ITEMS} items", "too_long")
        for i, item in enumerate(value):
            check_value(item, f"{field}.{i}", depth + 1)
    elif isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            raise _refuse(field, f"more than {MAX_ITEMS} keys", "too_long")
        for key, item in value.items():
            check_text(key, f"{field}.{key!r}")
            check_value(item, f"{field}.{key}", depth + 1)


def _declared_ints(request: Request) -> set[str]:
    """Names of the route's path and query parameters declared as integers (or lists of them)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return set()
    names: set[str] = set()
    stack = [dependant]
    while stack:
        dep = stack.pop()
        stack.extend(dep.dependencies)
        for param in (*dep.path_params, *dep.query_params):
            if _is_int(param.field_info.annotation):
                names.add(param.alias)
    return names


def _is_int(annotation: Any) -> bool:
    """``int``, ``int | None``, ``list[int]``: an integer parameter (``str | int`` is not)."""
    args = get_args(annotation)
    if not args:
        return annotation is int
    kinds = [a for a in args if a is not type(None)]
    return all(_is_int(a) for a in kinds) if kinds else False


def _check_params(request: Request) -> None:
    ints = _declared_ints(request)
    for where, items in (("path", request.path_params.items()),
                         ("query", request.query_params.multi_items())):
        for name, raw in items:
            if not isinstance(raw, str):
                continue
            field = f"{where}.{name}"
            check_text(raw, field)
            if name in ints:
                digits = raw.strip().lstrip("+-")
                if digits.isdigit() and (len(digits) > 19 or not INT64_MIN <= int(raw) <= INT64_MAX):
                    raise _refuse(field, "integer out of range (signed 64 bits)", "int_range")


def _body_adapter(request: Request) -> TypeAdapter[Any] | None:
    """A validator of the route's JSON body model (None: the route takes no body), built once
    per route and kept on it."""
    route = request.scope.get("route")
    body_field = getattr(route, "body_field", None)
    if body_field is None:
        return None
    adapter: TypeAdapter[Any] | None = getattr(route, "_strict_body", None)
    if adapter is None:
        adapter = TypeAdapter(body_field.field_info.annotation)
        route._strict_body = adapter  # type: ignore[union-attr]
    return adapter


def _check_strict(request: Request, raw: bytes) -> None:
    """Refuse a body that validates only in lax mode, naming the first such field."""
    adapter = _body_adapter(request)
    if adapter is None:
        return
    try:
        adapter.validate_json(raw, strict=True)
        return
    except ValidationError as exc:
        strict_errors = exc.errors()
    # JSON Schema's integer is any number with no fraction: 3.0 is one
    strict_errors = [e for e in strict_errors if not (
        e["type"] == "int_type" and isinstance(e.get("input"), float) and e["input"].is_integer())]
    if not strict_errors:
        return
    try:
        adapter.validate_json(raw)
    except ValidationError:
        return  # invalid in any mode: FastAPI's own 422 names the fields
    first = strict_errors[0]
    field = ".".join(["body", *(str(part) for part in first["loc"])])
    raise _refuse(field, first["msg"], first["type"])


async def check_request(request: Request) -> None:
    """App-wide dependency: refuse what no route can store (see the module docstring)."""
    _check_params(request)
    for name, value in request.headers.items():
        if name in ("if-match", "x-csrf-token") and "\x00" in value:
            raise _refuse(f"header.{name}", "NUL characters are not allowed", "string_characters")
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE") and "content-length" not in request.headers:
        return
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json") or ctype.endswith("+json"):
        raw = await request.body()  # already read (and size-capped) for routes with a body
        if raw:
            _check_strict(request, raw)
        if not raw or (len(raw) <= _WALK_ABOVE and not _SUSPECT.search(raw)):
            return
        try:
            value = json.loads(raw)
        except ValueError:
            return  # FastAPI reports malformed JSON itself
        check_value(value, "body")
    elif ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()  # FastAPI has parsed it already for form routes: cached
        for name, item in form.multi_items():
            check_text(name, f"body.{name}")
            if isinstance(item, UploadFile):
                check_text(item.filename or "", f"body.{name}.filename")
            elif isinstance(item, str):
                check_text(item, f"body.{name}")
