"""The OpenAPI document, told the truth in one place.

FastAPI describes each route from its signature; what it cannot see is added here, from each
route's access marker (service/core/deps.py) and method, for every operation at once:

- the errors it can answer, in the envelope the API really sends (``ErrorResponse``,
  ``{"error": {"code", "message", "details"}}``): 422 (validation, the sanitation layer) and 503
  (database faults) everywhere; 401 and 403 behind any marker but ``Public``; 404 where a path
  names a resource; 409 for unsafe methods; 413 where a body is sent, 400 where one is read, 428 where ``If-Match`` is taken. FastAPI's own
  ``{"detail": ...}`` 422, which the API never sends, is gone. A route adds a status of its own
  with ``responses={428: {"description": ...}}``: it gets the envelope too;
- a route that answers a file says so (``file_response``: its media types, binary, and
  ``Content-Disposition``), not an untyped JSON document;
- the bounds the sanitation layer enforces on every integer (signed 64 bits);
- components named as a generated client's classes (``tidy_component_names``);
- the bearer security scheme (API tokens, ``Authorization: Bearer atk_...``) on every
  authenticated operation, ``security: []`` on public ones.
"""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from service.core.deps import UNSAFE_METHODS
from service.core.errors import ErrorResponse
from service.core.sanitize import INT64_MAX, INT64_MIN

BEARER = "bearerAuth"
_REF = "#/components/schemas/ErrorResponse"
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")

# status: (code, what it means, an example message)
ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("http_error", "The body could not be read (not UTF-8, not of its declared type).",
          "There was an error parsing the body"),
    401: ("unauthorized", "No valid credentials: send `Authorization: Bearer <API token>`.",
          "authentication required"),
    403: ("forbidden", ("The caller's project role, admin status or token scope does not allow "
                       "this (`insufficient_scope`: the token lacks `read`, `write` or `admin`)."),
          "requires role lead or higher in this project"),
    404: ("not_found", ("The resource does not exist or is not visible to the caller (a project "
                       "the caller is not a member of answers the same 404)."),
          "project not found"),
    409: ("conflict", ("The change conflicts with the current state (a stale version, a duplicate "
                      "name, a job in the wrong state)."),
          "the change conflicts with existing data"),
    413: ("too_large", "The request body is over its size cap.",
          "request body larger than 16777216 bytes"),
    422: ("validation_error", "The request is invalid; `details` name the fields.",
          "invalid request: body.name"),
    428: ("precondition_required", ("Send the version you started from (`If-Match` or "
                                     "`body.version`)."),
          "send the version you started from (If-Match header or body.version)"),
    503: ("database_unavailable", ("The database is unavailable for a moment; retry after "
                                  "`Retry-After` seconds."),
          "the database is unavailable for a moment; retry"),
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    503: {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
}


# the files the API serves, by suffix (exports, artifacts); anything else is octet-stream
FILE_MEDIA = {".jsonl": "application/x-ndjson", ".json": "application/json",
              ".md": "text/markdown; charset=utf-8", ".parquet": "application/vnd.apache.parquet",
              ".zip": "application/zip", ".safetensors": "application/octet-stream"}
_DISPOSITION = {"Content-Disposition": {
    "schema": {"type": "string"}, "description": "`attachment; filename=...`: a download"}}


def file_media(name: str) -> str:
    """The media type a served file of this name is sent with."""
    suffix = name[name.rfind("."):] if "." in name else ""
    return FILE_MEDIA.get(suffix, "application/octet-stream")


def file_response(*media_types: str, description: str = "the file",
                  attachment: bool = True) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route that answers a file, not a JSON document: its media types
    (a JSON file is any JSON; others are bytes) and, for a download, ``Content-Disposition``.
    Pair it with a ``response_class`` that names no media type of its own (``FileResponse``,
    ``StreamingResponse``, ``Response``)."""
    content = {m: {"schema": {} if m == "application/json"
                   else {"type": "string", "format": "binary"}} for m in media_types}
    response: dict[str, Any] = {"description": description, "content": content}
    if attachment:
        response["headers"] = _DISPOSITION
    return {200: response}


def access_marker(route: APIRoute) -> str | None:
    """The route's access marker (``public``, ``user``, ``admin``, ``project:<role>``)."""
    for dep in route.dependant.dependencies:
        access = getattr(dep.call, "access", None)
        if access:
            return str(access)
    return None


def error_statuses(route: APIRoute, op: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from its access marker, method and
    parameters (``op``: the operation FastAPI generated)."""
    codes = {422, 503}
    if access_marker(route) != "public":
        codes |= {401, 403}
    if "{" in route.path_format:
        codes.add(404)
    methods = route.methods or set()
    if methods & UNSAFE_METHODS:
        codes.add(409)
    if methods & {"POST", "PUT", "PATCH"}:
        codes.add(413)
    if route.body_field is not None:
        codes.add(400)
    if any(p.get("in") == "header" and str(p.get("name")).lower() == "if-match"
           for p in op.get("parameters", [])):
        codes.add(428)  # optimistic concurrency: the version is required
    return codes


def _error_response(status: int, description: str | None = None) -> dict[str, Any]:
    code, meaning, message = ERRORS.get(status, ("error", "An error.", "an error"))
    details = [{"field": "body.name", "message": "Field required", "type": "missing"}]
    example = {"error": {"code": code, "message": message,
                         "details": details if status == 422 else []}}
    response: dict[str, Any] = {
        "description": description or meaning,
        "content": {"application/json": {"schema": {"$ref": _REF}, "example": example}},
    }
    if status in _HEADERS:
        response["headers"] = _HEADERS[status]
    return response


def _document(op: dict[str, Any], route: APIRoute) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    for status in error_statuses(route, op):
        declared = responses.get(str(status), {})
        refs = str(declared.get("content", {}))
        if not declared or "HTTPValidationError" in refs:
            responses[str(status)] = _error_response(status)
    for key, declared in list(responses.items()):
        if key[:1] in "45" and "content" not in declared:  # a route's own extra status
            responses[key] = _error_response(int(key), declared.get("description"))
    op["responses"] = dict(sorted(responses.items()))
    op["security"] = [] if access_marker(route) == "public" else [{BEARER: []}]


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route: those of the routers service/main.py includes (``app.state.routers``,
    which tests/test_access.py walks too) and any added to the app itself."""
    routers = getattr(app.state, "routers", [])
    found = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]
    return found + [r for r in app.routes if isinstance(r, APIRoute)]


def _int64(node: Any) -> None:
    """Every integer the API takes is refused outside signed 64 bits (service/core/sanitize.py):
    say so on every integer schema that does not state tighter bounds."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.setdefault("format", "int64")
            if "maximum" not in node and "exclusiveMaximum" not in node:
                node["maximum"] = INT64_MAX
            if "minimum" not in node and "exclusiveMinimum" not in node:
                node["minimum"] = INT64_MIN
        for value in node.values():
            _int64(value)
    elif isinstance(node, list):
        for value in node:
            _int64(value)


_PREFIX = "#/components/schemas/"


def _camel(snake: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_") if part)


def _tidy_name(name: str, schema: dict[str, Any]) -> str | None:
    """A client generator's class name for a component FastAPI named after a module path
    (two domains' ``VersionRead``), a generic (``Page[X]``) or a route (a form body)."""
    if name.startswith("service__") and "__schemas__" in name:
        domain = name.split("__")[1]
        return _camel(domain.removesuffix("s")) + name.rsplit("__", 1)[1]
    if name.startswith("Body_") and "_api_v1" in name:
        return _camel(name[len("Body_"):name.index("_api_v1")]) + "Form"
    return None


def _rename_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {k: _rename_refs(v, names) for k, v in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_PREFIX) and ref[len(_PREFIX):] in names:
            out["$ref"] = _PREFIX + names[ref[len(_PREFIX):]]
        return out
    if isinstance(node, list):
        return [_rename_refs(v, names) for v in node]
    return node


def tidy_component_names(spec: dict[str, Any]) -> dict[str, Any]:
    """Components named as a generated client's classes would be: ``DatasetVersionRead``, not
    ``service__datasets__schemas__VersionRead``; ``SampleReadPage``, not ``Page_SampleRead_``;
    ``UploadDocumentsForm``, not ``Body_upload_documents_api_v1_...``."""
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    names = {n: new for n, sch in schemas.items() if (new := _tidy_name(n, sch))}
    spec = _rename_refs(spec, names)
    schemas = spec["components"]["schemas"]
    renamed = {names.get(n, n): sch for n, sch in schemas.items()}
    spec["components"]["schemas"] = renamed
    pages = {}
    for name, schema in renamed.items():  # Page[X]: named after its items, once they are tidy
        if name.startswith(("Page_", "service__core__pagination__Page_")):
            item = schema.get("properties", {}).get("items", {}).get("items", {}).get("$ref", "")
            pages[name] = item[len(_PREFIX):] + "Page"
    spec = _rename_refs(spec, pages)
    final = {pages.get(n, n): sch for n, sch in spec["components"]["schemas"].items()}
    if len(final) != len(schemas):
        raise RuntimeError("two OpenAPI components would get the same name")
    spec["components"]["schemas"] = final
    return spec


def build(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, description=app.description,
                       routes=app.routes, servers=app.servers)
    paths: dict[str, Any] = spec.get("paths", {})
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            op = paths.get(route.path_format, {}).get(method.lower())
            if op is not None:
                _document(op, route)
    _int64(spec)
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    fastapi_422 = {name: schemas.pop(name) for name in _FASTAPI_422 if name in schemas}
    for name, schema in fastapi_422.items():  # kept only if something else still uses them
        if f"#/components/schemas/{name}'" in str(spec):
            schemas[name] = schema
    spec = tidy_component_names(spec)
    components = spec["components"]
    components["securitySchemes"] = {BEARER: {
        "type": "http", "scheme": "bearer",
        "description": "An API token (`atk_<prefix>_<secret>`, created under /api/v1/tokens or "
                       "`annotune token create`); its scopes (`read`, `write`, `admin`) limit it."}}
    return spec


def install(app: FastAPI) -> None:
    """Serve ``build(app)`` (once, cached) as the app's OpenAPI document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
