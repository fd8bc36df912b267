from __future__ import annotations

import json
import logging

import pytest

from service.core.config import Settings
from service.core.logging import JsonFormatter, ScrubFilter, request_id_var, scrub


@pytest.mark.nodb
def test_production_refuses_the_default_secret():
    from service.core.config import DEFAULT_SECRET

    for secret in (DEFAULT_SECRET, ""):
        with pytest.raises(ValueError, match="ANNOTUNE_SECRET_KEY"):
            Settings(environment="production", secret_key=secret)
    Settings(environment="production", secret_key="a-real-random-secret-value-of-32-bytes-or-more")
    Settings(environment="development")  # fine for local use


@pytest.mark.nodb
def test_json_logs_carry_request_id_and_never_secrets():
    record = logging.LogRecord("annotune", logging.INFO, __file__, 1,
                               "token atk_abcd1234_SeCrEtVaLuE and Bearer xyz.abc and api_key=sk-live-123456789",
                               None, None)
    token = request_id_var.set("req-42")
    try:
        ScrubFilter().filter(record)
    finally:
        request_id_var.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req-42" and line["level"] == "info"
    for secret in ("SeCrEtVaLuE", "xyz.abc", "sk-live-123456789"):
        assert secret not in line["msg"]
    assert scrub("password: hunter2") == "password: ***"


def test_request_id_header_round_trips(client):
    resp = client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert resp.headers["x-request-id"] == "abc123"
    assert client.get("/healthz").headers["x-request-id"]
