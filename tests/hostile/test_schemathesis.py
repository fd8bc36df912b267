"""schemathesis over the whole OpenAPI document, in the app's own process (ASGI transport).

Authenticated as a project lead (not the owner) with a read+write API token; the path's
``project_id`` and ``sample_id`` name the lead's project and a sample in it, so the generated
requests reach the handlers and not only the 404 of an unknown project (other ids are generated).
Every operation gets positive and negative cases with a fixed seed and a bounded number of
examples; the checks: no 5xx, every status, body and content type as the document declares, a
schema-violating request refused (``negative_data_rejection``: the app takes JSON types strictly,
service/core/sanitize.py) and a schema-valid one accepted (``positive_data_acceptance``), except
where the rule that refuses it cannot be written in OpenAPI: an opaque value (a cursor, an
``If-Match`` version: positive cases send a real one instead) or a rule about the database or
across fields (``BUSINESS_RULES``, each with why; ``SCHEMA_GAPS``: rules a schema could state and
the route's schema does not yet, excluded until it does).
"""
from __future__ import annotations

import functools
import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi import checks as openapi_checks

SEED = 20261221
MAX_EXAMPLES = 5
COVERAGE = os.environ.get("ANNOTUNE_SCHEMATHESIS_COVERAGE") == "1"
CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.positive_data_acceptance,
    openapi_checks.negative_data_rejection,
]
P = "/api/v1/projects/{project_id}"
# schema-valid requests refused by a rule OpenAPI cannot state (a 422 naming the field)
BUSINESS_RULES = {
    "POST /api/v1/me/password": "the password policy: distinct characters, common passwords, "
                                "the current password must be right",
    f"POST {P}/members": "the email must name an existing user",
    f"POST {P}/samples": "the document and chunk must exist in the project; the validation gate "
                         "(roles in order, no empty turn, an assistant answer last)",
    f"PATCH {P}/samples/{{sample_id}}": "the validation gate on the edited messages",
    f"POST {P}/samples/{{sample_id}}/status": "the version is required, in If-Match or in "
                                              "body.version (across header and body)",
    f"POST {P}/samples-bulk": "the assignee must be an annotator of the project",
    f"GET {P}/sample-stats": "the tokenizer must be available here (installed encodings, "
                             "models under the configured folders)",
    f"POST {P}/imports": "the mapping is JSON inside a form field (a string to the schema)",
    f"POST {P}/review/samples/{{sample_id}}/decision": "the validation gate on edited messages",
    f"POST {P}/review/samples/{{sample_id}}/adjudicate": "the validation gate on edited messages",
    f"POST {P}/review/assign": "the annotators must be members of the project",
    f"POST {P}/datasets/{{dataset_id}}/versions": "the split ratios must sum to 1 (across fields)",
    f"POST {P}/providers": "base_url is required for an OpenAI-compatible provider (depends on "
                           "the kind)",
    f"POST {P}/generation-jobs/plan": "integers inside free-form parameters: no type to bound",
    f"POST {P}/training-jobs": "the dataset version must exist in the project",
    f"POST {P}/eval-runs": "the dataset version must exist in the project",
    f"GET {P}/eval-compare": "the runs must exist in the project, differ, and evaluate the same "
                             "dataset version and split",
    f"POST {P}/preference-items": "the prompt must end with a non-empty user turn (the gate)",
    f"POST {P}/preference-items/import": "integers inside free-form records: no type to bound",
    f"POST {P}/preference-items/{{item_id}}/decision": "only a preferred candidate can be edited "
                                                         "(across fields)",
    f"POST {P}/preference-items/{{item_id}}/adjudicate": "outcome preferred needs chosen_id "
                                                        "(across fields), as for a decision",
    f"POST {P}/preference-versions": "the split ratios must sum to 1 (across fields)",
    f"POST {P}/preference-evals": "the preference version must exist in the project",
    f"POST {P}/preference-items/prerank": "the judge provider must exist in the project",
    f"POST {P}/preference-generation-jobs": "the provider must exist in the project",
}
# rules a schema could state and these routes' schemas do not yet (to fix in the route's
# declaration; excluded here until then)
SCHEMA_GAPS: dict[str, str] = {}
# multipart bodies with a file part: a negative case that makes a file "a boolean" or "an
# object" still arrives as a file whose bytes are ``false`` or ``{}`` (nothing to refuse)
FILE_PARTS = {
    f"POST {P}/documents": "files",
    f"POST {P}/imports": "file",
}
OPAQUE_QUERY = ("cursor",)  # only the server's own next_cursor is one


@pytest.fixture
def lead_world(db) -> dict:
    """A lead (not the owner) of a project with something in it; ids for the path parameters.
    Users are made with a precomputed password hash: 99 operations, 99 fresh worlds."""
    from service.auth import service as auth_service
    from service.models import Membership, Project, User
    from service.samples import service as samples_service

    owner = User(email="owner@example.com", name="owner", password_hash=_password_hash())
    lead = User(email="lead@example.com", name="lead", password_hash=_password_hash())
    db.add_all([owner, lead])
    db.flush()
    project = Project(name="Fuzzed", created_by_id=owner.id)
    db.add(project)
    db.flush()
    db.add_all([Membership(project_id=project.id, user_id=owner.id, role="owner"),
                Membership(project_id=project.id, user_id=lead.id, role="lead")])
    _tok, secret = auth_service.create_token(db, user=lead, name="fuzz", scopes=["read", "write"])
    sample = samples_service.create_sample(db, project_id=project.id, messages=[
        {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}])
    db.commit()
    return {"token": secret, "project_id": project.id, "sample_id": sample.id}


@functools.cache
def _password_hash() -> str:
    from service.core import security

    return security.hash_password("fuzzed password 1")


def _schema():
    from service.main import create_app

    config = SchemathesisConfig.from_dict({
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "mode": "all",
                       "with-security-parameters": False,
                       # no field takes NUL (refused app-wide with a 422 naming the field)
                       "allow-x00": False},
        # the coverage phase (every boundary and wrong type of every field: the run that found
        # the lax booleans and integers) takes ~2.5x the CPU of the fuzzing phase; CI runs
        # fuzzing only to stay under 60 s, ANNOTUNE_SCHEMATHESIS_COVERAGE=1 runs both
        "phases": {"coverage": {"enabled": COVERAGE, "unexpected-methods": []}},
    })
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(), config=config)


schema = _schema()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_contract(case, lead_world):
    # the path names the lead's project and things in it (unless the case is about a bad path)
    if case.path_parameters and not case.meta.is_negative_at(ParameterLocation.PATH):
        for name in ("project_id", "sample_id"):
            if name in case.path_parameters:
                case.path_parameters[name] = lead_world[name]
    if case.query and not case.meta.is_negative_at(ParameterLocation.QUERY):
        for name in OPAQUE_QUERY:
            case.query.pop(name, None)
    if case.headers and "If-Match" in case.headers and not case.meta.is_negative_at(
            ParameterLocation.HEADER):
        case.headers["If-Match"] = '"1"'  # a version (stale after the first edit: a 409)
    label = case.operation.label
    excluded = ([openapi_checks.positive_data_acceptance]
                if label in BUSINESS_RULES or label in SCHEMA_GAPS else [])
    if label in FILE_PARTS and _file_part_mistyped(case, FILE_PARTS[label]):
        excluded.append(openapi_checks.negative_data_rejection)
    case.call_and_validate(headers={"Authorization": f"Bearer {lead_world['token']}"},
                           checks=[c for c in CHECKS if c not in excluded])


def _file_part_mistyped(case, part: str) -> bool:
    """A negative multipart case whose file part the generator made a non-string (sent as a
    file all the same)."""
    body = case.body if isinstance(case.body, dict) else {}
    if not case.meta.is_negative_at(ParameterLocation.BODY) or part not in body:
        return False
    value = body[part]
    return any(not isinstance(v, (bytes, str)) for v in (value if isinstance(value, list) else [value]))


def test_json_types_are_taken_strictly(client, lead_world):
    """What negative_data_rejection found: pydantic's lax mode took ``0`` for a boolean and
    ``false`` for an integer. A JSON body is taken as the schema types it (service/core/sanitize.py),
    with JSON Schema's integers (``5.0`` is one)."""
    url = f"/api/v1/projects/{lead_world['project_id']}/review/settings"
    headers = {"Authorization": f"Bearer {lead_world['token']}"}
    for body, field in (({"clear_target": 0}, "body.clear_target"),
                        ({"target_accepted": True}, "body.target_accepted"),
                        ({"target_accepted": "5"}, "body.target_accepted"),
                        ({"reject_reasons": [1]}, "body.reject_reasons.0")):
        resp = client.put(url, json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["error"]["details"][0]["field"] == field, (body, resp.text)
    resp = client.put(url, json={"target_accepted": 5.0}, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["target_accepted"] == 5
