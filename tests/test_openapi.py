"""The OpenAPI document tells the truth (service/core/openapi.py): every operation declares its
errors in the envelope the API sends, the bearer scheme, and a typed success response; the
document is served at /openapi.json too. The statuses the API really answers are checked by
tests/hostile/test_schemathesis.py."""
from __future__ import annotations

from typing import Any, get_args, get_origin

import pytest

pytestmark = pytest.mark.nodb
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
def spec(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        root = client.get("/openapi.json")
        assert root.status_code == 200
        assert root.json() == client.get("/api/v1/openapi.json").json()
    return root.json()


def _operations(spec):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield f"{method.upper()} {path}", path, op


def test_every_error_is_the_real_envelope(spec):
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    problems = []
    for name, _path, op in _operations(spec):
        codes = {c for c in op["responses"] if c[0] in "45"}
        if not {"422", "503"} <= codes:
            problems.append(f"{name}: errors {sorted(codes)}")
        for code in codes:
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            if name == "GET /readyz" and code == "503":  # the readiness report, not an error
                assert schema == {"$ref": "#/components/schemas/Readiness"}
            elif schema != {"$ref": ERROR_REF}:
                problems.append(f"{name} {code}: {schema}")
    assert not problems, "\n".join(problems)
    assert set(spec["components"]["schemas"]["ErrorResponse"]["properties"]) == {"error"}


def test_security_and_access_errors_follow_the_marker(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    for name, path, op in _operations(spec):
        assert "security" in op, name
        if path in ("/healthz", "/readyz", "/api/v1/invitations/{token}/accept"):
            assert op["security"] == [], name
            continue
        assert op["security"] == [{"bearerAuth": []}], name
        assert {"401", "403"} <= set(op["responses"]), name
        if "{" in path:
            assert "404" in op["responses"], name
        if name.split()[0] in ("POST", "PUT", "PATCH", "DELETE"):
            assert "409" in op["responses"], name


def _untyped(schema) -> bool:
    """An empty schema, or an object with no properties of its own (``dict``), or an array of
    such: nothing a client generator can type."""
    if not schema:
        return True
    if schema.get("type") == "array":
        return _untyped(schema.get("items"))
    return (schema.get("type") == "object" and "properties" not in schema
            and schema.get("additionalProperties") in (None, True, {}))


def test_every_success_is_typed(spec):
    """Every 2xx but a 204 has a typed JSON schema, or is a file (a download says so with
    ``Content-Disposition``; plain text is a string)."""
    untyped = []
    for name, _path, op in _operations(spec):
        for code, response in op["responses"].items():
            if not code.startswith("2") or code == "204":
                continue
            content = response.get("content")
            if not content:
                untyped.append(f"{name} {code}: no content")
                continue
            download = "Content-Disposition" in response.get("headers", {})
            for media, body in content.items():
                schema = body.get("schema")
                if media == "application/json" and not download:
                    if _untyped(schema):
                        untyped.append(f"{name} {code}: {schema}")
                elif not download and not media.startswith("text/"):
                    untyped.append(f"{name} {code}: {media} but no Content-Disposition")
                elif media != "application/json" and (schema or {}).get("type") != "string":
                    untyped.append(f"{name} {code} {media}: {schema}")
    assert not untyped, "\n".join(untyped)


def test_every_route_names_its_response_model(app):
    """``response_model`` (or a file ``response_class``) on every route: nothing typed only by
    what the handler happens to return."""
    from fastapi.routing import APIRoute
    from starlette.responses import FileResponse, PlainTextResponse, StreamingResponse

    from service.core.openapi import api_routes

    missing = []
    for route in api_routes(app):
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        files = (FileResponse, StreamingResponse, PlainTextResponse)
        response_class = getattr(route.response_class, "value", route.response_class)
        if route.status_code == 204 or issubclass(response_class, files):
            continue
        model = route.response_model
        while get_origin(model) is list:
            (model,) = get_args(model)
        if model in (None, dict, list, Any) or get_origin(model) is dict:
            missing.append(f"{sorted(route.methods)} {route.path}: {model}")
    assert not missing, "\n".join(missing)


def test_components_are_named_as_classes(spec):
    """No module paths, generics or route names in the component names a client generator
    turns into classes (service/core/openapi.py tidy_component_names)."""
    import re

    names = list(spec["components"]["schemas"])
    assert all(re.fullmatch(r"[A-Z][A-Za-z0-9]*", n) for n in names), [
        n for n in names if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", n)]
    for name in ("DatasetVersionRead", "PreferenceVersionRead", "GenerationJobRead",
                 "DiversityJobRead", "SampleReadPage", "UploadDocumentsForm"):
        assert name in names, name
    refs = set(re.findall(r"#/components/schemas/([A-Za-z0-9_]+)", str(spec)))
    assert refs <= set(names)


def test_integers_carry_their_bounds(spec):
    param = next(p for _n, path, op in _operations(spec) if path == "/api/v1/projects/{project_id}"
                 for p in op.get("parameters", []) if p["name"] == "project_id")
    assert param["schema"]["maximum"] == 2**63 - 1 and param["schema"]["format"] == "int64"


def test_job_statuses_are_enums(spec):
    """Every job table's status words are one StrEnum (service/models/job.py), shared by the
    job kit's declarations and the API's schemas; the column stays a string."""
    import service.main  # noqa: F401  (every domain registers its job kinds)
    from service.core.db import Base
    from service.core.jobs import KINDS
    from service.models.job import STATUS_ENUMS, JobMixin

    tables = {m.class_.__tablename__ for m in Base.registry.mappers
              if issubclass(m.class_, JobMixin)}
    assert tables == set(STATUS_ENUMS)
    for kind in KINDS.values():
        words = {s.value for s in STATUS_ENUMS[kind.model.__tablename__]}
        assert {kind.queued, kind.running, *kind.finished} <= words, kind.name
    schemas = spec["components"]["schemas"]
    for name in ("SampleStatus", "DocumentStatus", "BuildStatus", "ExportStatus", "ImportStatus",
                 "TrainingStatus", "BulkStatus", "UnitStatus", "JobStatus", "ItemStatus"):
        assert schemas[name]["type"] == "string" and schemas[name]["enum"], name
    reads = [n for n, s in schemas.items() if "status" in s.get("properties", {})
             and ("Read" in n or n.endswith("JobStarted"))]
    assert reads
    for name in reads:
        status = schemas[name]["properties"]["status"]
        assert "$ref" in str(status) or "enum" in status, (name, status)


def _param(spec, method, path, name):
    op = spec["paths"][path][method]
    return next(p for p in op.get("parameters", []) if p["name"] == name)["schema"]


def test_query_parameters_state_their_values(spec):
    """What the routes refuse, the document says: enums, a pattern, at least one file."""
    from service.samples import service as samples_service
    from service.samples.schemas import SampleSort

    P = "/api/v1/projects/{project_id}"
    status = _param(spec, "get", f"{P}/samples", "status")
    assert "SampleStatus" in str(status)
    assert {s.value for s in SampleSort} == set(samples_service.SORTS)
    for method, path in (("get", f"{P}/samples"), ("get", f"{P}/review/next"),
                         ("post", f"{P}/review/samples/{{sample_id}}/skip")):
        assert "SampleSort" in str(_param(spec, method, path, "sort")), path
    runs = _param(spec, "get", f"{P}/eval-compare", "runs")
    assert runs["pattern"].startswith("^")
    import re
    assert re.fullmatch(runs["pattern"], "1,2") and re.fullmatch(runs["pattern"], "3, 4 ,5")
    assert not re.fullmatch(runs["pattern"], "1") and not re.fullmatch(runs["pattern"], "1,x")
    upload = spec["paths"][f"{P}/documents"]["post"]["requestBody"]["content"]
    body_ref = upload["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert spec["components"]["schemas"][body_ref]["properties"]["files"]["minItems"] == 1
    for path, enum in ((f"{P}/documents", "DocumentStatus"), (f"{P}/eval-runs", "JobStatus"),
                       (f"{P}/preference-items", "ItemStatus"),
                       (f"{P}/generation-jobs/{{job_id}}/units", "UnitStatus")):
        assert enum in str(_param(spec, "get", path, "status")), path


def _resolve(spec, schema):
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_list_pages_the_same_way(spec):
    """Every GET that answers a list answers ``{items, next_cursor}`` and takes ``limit`` (with
    a maximum) and ``cursor`` (service/core/pagination.py); none answers a bare array."""
    from service.core.pagination import MAX_LIMIT

    problems, pages = [], 0
    for name, _path, op in _operations(spec):
        ok = op["responses"].get("200", {}).get("content", {}).get("application/json")
        if not ok or not name.startswith("GET "):
            continue
        schema = _resolve(spec, ok["schema"])
        if schema.get("type") == "array":
            problems.append(f"{name}: a bare array")
            continue
        props = schema.get("properties", {})
        if "items" not in props or props["items"].get("type") != "array":
            continue
        pages += 1
        params = {p["name"]: p["schema"] for p in op.get("parameters", [])}
        if "next_cursor" not in props:
            problems.append(f"{name}: no next_cursor")
        if "cursor" not in params:
            problems.append(f"{name}: no cursor")
        if params.get("limit", {}).get("maximum") != MAX_LIMIT:
            problems.append(f"{name}: limit {params.get('limit')}")
    assert not problems, "\n".join(problems)
    assert pages >= 30
