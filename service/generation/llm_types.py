"""What an LLM call takes and gives: ``ProviderSettings``, ``LLMResult``, ``ParsedResult`` and
``LLMError``. See ``llm.py`` for the calls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from service.core.sanitize import strip_text

log = logging.getLogger(__name__)

__all__ = [
    "MAX_CONCURRENCY",
    "LLMError",
    "LLMResult",
    "ParsedResult",
    "ProviderSettings",
    "Truncated",
    "Usage",
]

MAX_CONCURRENCY = 512
"""The most concurrent requests a provider may be given (its ``max_concurrency``); the HTTP
client keeps that many connections open, so the limiter, not the pool, bounds them."""


@dataclass(frozen=True)
class ProviderSettings:
    """Where and how to call a model. Built from an ``LLMProvider`` row by the caller."""

    base_url: str
    """OpenAI-compatible base URL, e.g. ``http://vllm:8000/v1``."""
    model: str
    api_key: SecretStr | None = field(default=None, repr=False)
    """Given as ``str`` or ``SecretStr``; stored as ``SecretStr``. ``None``: the server needs none."""
    timeout: float = 60.0
    """Seconds per attempt (connect + read)."""
    max_retries: int = 4
    """Retries after the first attempt (so at most ``1 + max_retries`` requests)."""
    default_params: Mapping[str, Any] = field(default_factory=dict)
    """Sampling parameters for every call (temperature, max_tokens, ...); ``params`` override."""
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    """Merged into every request body, e.g. ``{"chat_template_kwargs": {"enable_thinking": False}}``."""
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 120.0
    """A longer ``Retry-After`` is capped to this many seconds."""

    def __post_init__(self) -> None:
        if isinstance(self.api_key, str):
            object.__setattr__(self, "api_key", SecretStr(self.api_key))
        if not self.base_url:
            raise ValueError("base_url is required")
        if not self.model:
            raise ValueError("model is required")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff must be >= 0")

    @property
    def display_url(self) -> str:
        """The base URL without any user:password part, for messages and logs."""
        parts = urlsplit(self.base_url)
        if parts.username or parts.password:
            host = parts.hostname or ""
            if parts.port:
                host = f"{host}:{parts.port}"
            parts = parts._replace(netloc=host)
        return urlunsplit(parts)

    def secret_values(self) -> list[str]:
        """Strings that must never reach a message or log line."""
        values = []
        if self.api_key is not None and self.api_key.get_secret_value():
            values.append(self.api_key.get_secret_value())
        parts = urlsplit(self.base_url)
        if parts.password:
            values.append(parts.password)
        return values


@dataclass
class LLMResult:
    content: str
    """The answer, with reasoning removed and surrounding whitespace stripped."""
    reasoning: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    """Duration of the successful request."""
    attempts: int
    raw: dict[str, Any] = field(repr=False)
    """The completion as the server sent it (``model_dump()``)."""
    finish_reason: str | None = None
    model: str | None = None
    elapsed_s: float = 0.0
    """Wall time of the whole call: all attempts, backoff sleeps and limiter waits."""
    removed: int = 0
    """NULs and lone surrogates taken out of ``content`` and ``reasoning`` (see below)."""

    def __post_init__(self) -> None:
        """A model's text is outside input like a document's: a NUL (which PostgreSQL cannot
        store in text) or a lone surrogate (a JSON ``\\ud800`` escape: not UTF-8) is removed
        here, with a warning, so that one odd answer never fails the write of a whole batch of
        samples, units or predictions, whichever runner made the call."""
        removed = 0
        if self.content:
            self.content, n = strip_text(self.content)
            removed += n
        if self.reasoning:
            reasoning, n = strip_text(self.reasoning)
            self.reasoning = reasoning or None
            removed += n
        if removed:
            log.warning(
                "a model answer held %d NUL or lone surrogate character(s): removed", removed)
        self.removed += removed


@dataclass
class ParsedResult:
    value: Any
    result: LLMResult
    repairs: int
    """How many repair rounds were needed (0: the first answer parsed)."""


class LLMError(Exception):
    """A call that failed for good. The message never contains the API key."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        kind: str = "error",
        retryable: bool = False,
        attempts: int = 0,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.kind = kind
        """``rate_limit``, ``server``, ``client``, ``auth``, ``timeout``, ``connection``,
        ``bad_response``."""
        self.retryable = retryable
        self.attempts = attempts

    def __reduce__(self):
        return (
            _rebuild_error,
            (self.message, self.status_code, self.kind, self.retryable, self.attempts),
        )


class Truncated(LLMError):
    """The answer was cut off by the token budget (``finish_reason`` ``length``), also after a
    retry with a larger budget: never accepted as a sample. ``raw`` is the cut-off answer."""

    def __init__(self, message: str, raw: str, *, attempts: int = 0):
        super().__init__(message, kind="truncated", attempts=attempts)
        self.raw = raw

    def __reduce__(self):
        return (Truncated, (self.message, self.raw))


@dataclass
class Usage:
    """What calls cost, added up as they happen (also for calls that end in an error), so a
    caller can record every attempt: the tokens the server reported, requests sent, retries
    (a request repeating one that failed or was cut off) and repair rounds."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    retries: int = 0
    repairs: int = 0

    def add_tokens(self, usage: Any) -> None:
        """Add a completion's ``usage`` (an object or a mapping; ``None``: nothing reported)."""
        if usage is None:
            return
        get = usage.get if isinstance(usage, Mapping) else lambda k: getattr(usage, k, None)
        self.prompt_tokens += int(get("prompt_tokens") or 0)
        self.completion_tokens += int(get("completion_tokens") or 0)

    def columns(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "requests": self.requests, "retries": self.retries, "repairs": self.repairs}


def _rebuild_error(message, status_code, kind, retryable, attempts):  # pickle helper
    return LLMError(
        message, status_code=status_code, kind=kind, retryable=retryable, attempts=attempts
    )
