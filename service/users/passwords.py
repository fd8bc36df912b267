"""The password policy: one function used by the CLI, the invitation pages and the REST API."""
from __future__ import annotations

from service.core.errors import Invalid

MIN_LENGTH = 10
MAX_LENGTH = 256
# the few that people pick first; longer lists belong to a breach-corpus check, not here
COMMON = frozenset({
    "password", "password1", "password12", "password123", "passw0rd", "qwerty", "qwertyuiop",
    "1234567890", "12345678910", "0123456789", "iloveyou", "admin12345", "administrator",
    "letmein123", "welcome123", "changeme", "changeme123", "annotune", "annotune123",
})


def password_problem(password: str, *, email: str | None = None) -> str | None:
    """Why ``password`` is refused, or None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters long"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters long"
    if len(set(password)) < 4:
        return "must use at least 4 different characters"
    lowered = password.lower()
    if lowered in COMMON:
        return "is too common"
    if email and lowered in {email.strip().lower(), email.strip().lower().split("@")[0]}:
        return "must not be your email address"
    return None


def check_password(password: str, *, email: str | None = None, field: str = "password") -> None:
    """Raise ``Invalid`` (422, naming ``field``) when the policy refuses ``password``."""
    problem = password_problem(password, email=email)
    if problem:
        raise Invalid(f"the password {problem}", code="weak_password",
                      details=[{"field": field, "message": problem, "type": "weak_password"}])
