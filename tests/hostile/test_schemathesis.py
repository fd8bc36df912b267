"""schemathesis over the whole OpenAPI document, in the app's own process (ASGI transport).

Authenticated as a project lead (not the owner) with a read+write API token; the path's
``project_id`` and ``sample_id`` name the lead's project and a sample in it, so the generated
requests reach the handlers and not only the 404 of an unknown project (other ids are generated).
Every operation gets positive and negative cases with a fixed seed and a bounded number of
examples; the checks: no 5xx, and every status, body and content type as the document declares.
Not yet checked: ``positive_data_acceptance`` (business rules a JSON schema cannot state, such
as an opaque cursor or an unknown email, answer 422) and ``negative_data_rejection`` (pydantic's
lax mode takes ``0`` for a boolean).
"""
from __future__ import annotations

import functools

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi import checks as openapi_checks

SEED = 20261221
MAX_EXAMPLES = 5
CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.content_type_conformance,
]


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
    case.call_and_validate(headers={"Authorization": f"Bearer {lead_world['token']}"},
                           checks=CHECKS)
