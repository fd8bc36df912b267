"""The HTTP side of an LLM call: cached ``openai`` clients, request parameters, error
classification (retryable or not, ``Retry-After``), backoff, and redaction of secrets.

The retry loop itself is ``llm.chat``; the policy is described in ``llm.py``.
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import openai

from service.core import egress
from service.generation.llm_types import MAX_CONCURRENCY, LLMError, ProviderSettings

__all__ = [
    "RETRYABLE_STATUS",
    "NoChoices",
    "backoff_delay",
    "classify_error",
    "close_clients",
    "get_client",
    "redact",
    "request_kwargs",
]

RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))

# Parameters the chat-completions endpoint takes as named arguments; anything else in params
# (top_k, repetition_penalty, chat_template_kwargs, ...) goes to the request body via extra_body.
_OPENAI_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning_effort",
        "user",
        "metadata",
        "service_tier",
    }
)


# --------------------------------------------------------------------------------------------
# Clients: one per (process, base URL, key), shared by threads (keeps connections alive)
# --------------------------------------------------------------------------------------------

_clients: dict[tuple[int, str, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def get_client(settings: ProviderSettings) -> openai.OpenAI:
    key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
    cache_key = (os.getpid(), settings.base_url, key)
    client = _clients.get(cache_key)
    if client is None:
        with _clients_lock:
            client = _clients.get(cache_key)
            if client is None:
                client = openai.OpenAI(
                    base_url=settings.base_url,
                    # vLLM and most local servers accept any key; the client insists on one.
                    api_key=key or "EMPTY",
                    max_retries=0,
                    timeout=settings.timeout,
                    # every connection (redirects too) checked against the egress policy;
                    # one per concurrent call kept open (at 20, a job at concurrency 64 opened
                    # 44 new connections per round, each resolved and checked again)
                    http_client=egress.guarded_http_client(timeout=settings.timeout,
                                                           connections=MAX_CONCURRENCY),
                )
                _clients[cache_key] = client
    return client


def close_clients() -> None:
    """Close this process's cached HTTP clients (tests, worker shutdown)."""
    with _clients_lock:
        items = list(_clients.items())
        _clients.clear()
    for (pid, _, _), client in items:
        if pid == os.getpid():
            client.close()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def redact(text: str, settings: ProviderSettings) -> str:
    for secret in settings.secret_values():
        if secret:
            text = text.replace(secret, "***")
    if settings.display_url != settings.base_url:
        text = text.replace(settings.base_url, settings.display_url)
    return text


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(
    attempt: int, settings: ProviderSettings, retry_after: float | None = None
) -> float:
    """Sleep before retry number ``attempt`` (1-based): full jitter, not below Retry-After."""
    ceiling = min(settings.backoff_max, settings.backoff_base * (2 ** (attempt - 1)))
    delay = random.uniform(0.0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.retry_after_max))
    return delay


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def request_kwargs(
    settings: ProviderSettings, params: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    merged = {**settings.default_params, **(params or {})}
    extra = _deep_merge(settings.extra_body, merged.pop("extra_body", None) or {})
    if merged.pop("stream", False):
        raise ValueError("streaming is not supported by chat()")
    kwargs: dict[str, Any] = {}
    for key, value in merged.items():
        if key in _OPENAI_PARAMS:
            kwargs[key] = value
        else:
            extra[key] = value
    return kwargs, extra


def classify_error(exc: Exception, settings: ProviderSettings) -> tuple[LLMError, float | None]:
    """Turn an openai exception into a redacted LLMError (+ Retry-After seconds)."""
    where = settings.display_url
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = ""
        body = exc.body
        if isinstance(body, Mapping):
            err = body.get("error", body)
            if isinstance(err, Mapping):
                detail = str(err.get("message") or err.get("detail") or "")
            else:
                detail = str(err)
        # a body that is not an OpenAI-style JSON error (an internal service's banner, an HTML
        # page) is not echoed: the caller sees the status only
        if status == 429:
            kind = "rate_limit"
        elif status >= 500:
            kind = "server"
        elif status in (401, 403):
            kind = "auth"
        else:
            kind = "client"
        retryable = status in RETRYABLE_STATUS
        message = f"{where} answered HTTP {status}"
        if detail:
            message += f": {_short(detail)}"
        headers = exc.response.headers if exc.response is not None else None
        return (
            LLMError(redact(message, settings), status_code=status, kind=kind, retryable=retryable),
            _retry_after(headers) if retryable else None,
        )
    if isinstance(exc, openai.APITimeoutError):
        return (
            LLMError(
                f"{where} did not answer within {settings.timeout:g} s",
                kind="timeout",
                retryable=True,
            ),
            None,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        denied = egress.denial_in(cause)
        if denied:
            return LLMError(denied, kind="egress", retryable=False), None
        reason = type(cause).__name__ if cause is not None else "connection error"
        return (
            LLMError(
                redact(f"could not connect to {where} ({reason})", settings),
                kind="connection",
                retryable=True,
            ),
            None,
        )
    # APIResponseValidationError, undecodable JSON bodies, ...
    return (
        LLMError(
            redact(f"{where} sent an unreadable response ({type(exc).__name__})", settings),
            kind="bad_response",
            retryable=True,
        ),
        None,
    )


class NoChoices(Exception):
    pass
