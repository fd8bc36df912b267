"""Password hashes: argon2id at the library's defaults outside the test environment."""
from __future__ import annotations

import pytest
from argon2 import extract_parameters

from service.core import config, security


@pytest.mark.nodb
@pytest.mark.parametrize("environment", ["development", "production"])
def test_outside_tests_hashes_use_argon2_defaults(monkeypatch, environment):
    settings = config.Settings(environment=environment, secret_key="x" * 48)
    monkeypatch.setattr(config, "get_settings", lambda: settings)
    hasher = security._hasher.__wrapped__()
    params = extract_parameters(hasher.hash("correct horse battery"))
    assert (params.memory_cost, params.time_cost, params.parallelism) == (65536, 3, 4)


@pytest.mark.nodb
def test_a_hash_made_with_other_parameters_still_verifies():
    """The cheap test hasher verifies a default-cost hash: a hash carries its parameters."""
    from argon2 import PasswordHasher

    strong = PasswordHasher().hash("correct horse battery")
    assert security.verify_password(strong, "correct horse battery")
    assert not security.verify_password(strong, "wrong horse battery")
    assert extract_parameters(security.hash_password("x" * 12)).memory_cost == 1024
