"""Password hashing (argon2), API token and session secrets."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

TOKEN_PREFIX = "atk_"


@cache
def _hasher() -> PasswordHasher:
    """argon2id with the library's defaults (64 MiB, 3 passes). The test environment only uses
    1 MiB and one pass: the suite creates and logs in thousands of users, and at ~0.4 s a hash on
    these CPUs hashing was minutes of its run. A hash carries its parameters, so either verifies."""
    from service.core.config import get_settings

    if get_settings().environment == "test":
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so timing does not reveal accounts."""
    return _hasher().hash(secrets.token_urlsafe(16))


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_api_token() -> tuple[str, str, str]:
    """Return (secret, prefix, sha256). The secret is ``atk_<prefix>_<random>``."""
    prefix = secrets.token_hex(4)
    secret = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return secret, prefix, sha256_hex(secret)


def token_prefix(secret: str) -> str | None:
    if not secret.startswith(TOKEN_PREFIX):
        return None
    body = secret[len(TOKEN_PREFIX):]
    prefix, sep, _ = body.partition("_")
    return prefix if sep else None


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# -- secrets at rest (provider API keys) -------------------------------------------------------

def _fernet() -> Any:
    import base64

    from cryptography.fernet import Fernet

    from service.core.config import get_settings

    key = hashlib.sha256(b"annotune-secrets:" + get_settings().secret_key.get_secret_value().encode())
    return Fernet(base64.urlsafe_b64encode(key.digest()))


def encrypt_secret(value: str) -> str:
    return str(_fernet().encrypt(value.encode()).decode())


def decrypt_secret(token: str) -> str:
    return str(_fernet().decrypt(token.encode()).decode())
