"""Calling an LLM behind any OpenAI-compatible chat-completions endpoint.

:func:`chat` sends one conversation and returns an :class:`LLMResult`. It uses the official
``openai`` client with the client's own retries switched off, so the retry policy lives here and
is the same for every provider:

- retried: HTTP 408/409/429 and 5xx, timeouts, connection errors, unreadable responses;
- exponential backoff with full jitter (``uniform(0, min(backoff_max, backoff_base * 2**k))``),
  never sooner than the server's ``Retry-After`` (seconds, or ``retry-after-ms``);
- bounded: at most ``1 + max_retries`` attempts, then :class:`LLMError`;
- other 4xx fail at once with :class:`LLMError`.

A limiter (e.g. :class:`service.generation.limiter.RedisSemaphore`) is held only while a request
is in flight, never while sleeping between attempts.

The API key is a ``SecretStr``: it does not appear in ``repr``/``str`` of the settings, and error
messages and log lines are built by this module from redacted parts (``raise ... from None``, so
the openai exception with the raw response is not chained into tracebacks).

Reasoning models: ``<think>...</think>`` blocks are moved from the content into ``reasoning``
(also an unopened ``...</think>`` prefix, as Qwen3/DeepSeek-R1 chat templates produce, and an
unclosed ``<think>`` tail when the answer was cut off); a ``reasoning_content`` (vLLM, DeepSeek)
or ``reasoning`` field on the message is read too.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from pydantic import SecretStr

from service.core import egress
from service.generation import parsers

__all__ = [
    "LLMError",
    "LLMResult",
    "ParsedResult",
    "ProviderSettings",
    "chat",
    "chat_parsed",
    "close_clients",
    "split_reasoning",
    "test_connection",
]

log = logging.getLogger(__name__)

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


def _rebuild_error(message, status_code, kind, retryable, attempts):  # pickle helper
    return LLMError(
        message, status_code=status_code, kind=kind, retryable=retryable, attempts=attempts
    )


# --------------------------------------------------------------------------------------------
# Clients: one per (process, base URL, key), shared by threads (keeps connections alive)
# --------------------------------------------------------------------------------------------

_clients: dict[tuple[int, str, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def _client(settings: ProviderSettings) -> openai.OpenAI:
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
                    # every connection (redirects too) checked against the egress policy
                    http_client=egress.guarded_http_client(timeout=settings.timeout),
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


def _redact(text: str, settings: ProviderSettings) -> str:
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


_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def split_reasoning(content: str | None) -> tuple[str, str | None]:
    """``(answer, reasoning)`` from a content string that may hold ``<think>`` blocks."""
    if not content:
        return "", None
    parts: list[str] = []

    def take(match: re.Match[str]) -> str:
        parts.append(match.group(1).strip())
        return ""

    text = _THINK_BLOCK.sub(take, content)
    if "</think>" in text:  # template opened <think> in the prompt: the answer starts after it
        before, _, text = text.partition("</think>")
        parts.insert(0, before.strip())
    if "<think>" in text:  # cut off while thinking
        text, _, after = text.partition("<think>")
        parts.append(after.strip())
    reasoning = "\n\n".join(p for p in parts if p) or None
    return text.strip(), reasoning


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _request_kwargs(
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


def _message_field(message: Any, name: str) -> str | None:
    value = getattr(message, name, None)
    if value is None and getattr(message, "model_extra", None):
        value = message.model_extra.get(name)
    return value if isinstance(value, str) and value.strip() else None


def _classify(exc: Exception, settings: ProviderSettings) -> tuple[LLMError, float | None]:
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
            LLMError(
                _redact(message, settings), status_code=status, kind=kind, retryable=retryable
            ),
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
                _redact(f"could not connect to {where} ({reason})", settings),
                kind="connection",
                retryable=True,
            ),
            None,
        )
    # APIResponseValidationError, undecodable JSON bodies, ...
    return (
        LLMError(
            _redact(f"{where} sent an unreadable response ({type(exc).__name__})", settings),
            kind="bad_response",
            retryable=True,
        ),
        None,
    )


class _NoChoices(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Public calls
# --------------------------------------------------------------------------------------------


def chat(
    settings: ProviderSettings,
    messages: Sequence[Mapping[str, Any]],
    *,
    params: Mapping[str, Any] | None = None,
    limiter: AbstractContextManager[Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LLMResult:
    """One chat completion, retried as described in the module docstring.

    ``params`` override ``settings.default_params``; keys the endpoint does not name (``top_k``,
    ``chat_template_kwargs``) and ``params["extra_body"]`` go into the request body, merged over
    ``settings.extra_body``. ``limiter`` is entered around each HTTP request.
    """
    kwargs, extra = _request_kwargs(settings, params)
    client = _client(settings)
    started = time.perf_counter()
    max_attempts = settings.max_retries + 1
    last: LLMError | None = None
    for attempt in range(1, max_attempts + 1):
        retry_after: float | None = None
        try:
            with limiter if limiter is not None else nullcontext():
                t0 = time.perf_counter()
                completion = client.chat.completions.create(
                    model=settings.model,
                    messages=list(messages),  # type: ignore[arg-type]
                    extra_body=extra or None,
                    timeout=settings.timeout,
                    **kwargs,
                )
                latency = time.perf_counter() - t0
            if not getattr(completion, "choices", None):
                raise _NoChoices()
        except openai.OpenAIError as exc:
            last, retry_after = _classify(exc, settings)
        except _NoChoices:
            last = LLMError(
                f"{settings.display_url} sent a completion without choices",
                kind="bad_response",
                retryable=True,
            )
        except ValueError as exc:  # body that is not JSON, on some client versions
            last = LLMError(
                _redact(
                    f"{settings.display_url} sent an unreadable response ({type(exc).__name__})",
                    settings,
                ),
                kind="bad_response",
                retryable=True,
            )
        else:
            choice = completion.choices[0]
            message = choice.message
            content, think = split_reasoning(message.content if message is not None else None)
            field_reasoning = None
            if message is not None:
                field_reasoning = _message_field(message, "reasoning_content") or _message_field(
                    message, "reasoning"
                )
            reasoning = "\n\n".join(r for r in (field_reasoning, think) if r) or None
            usage = completion.usage
            return LLMResult(
                content=content,
                reasoning=reasoning,
                prompt_tokens=getattr(usage, "prompt_tokens", None),
                completion_tokens=getattr(usage, "completion_tokens", None),
                latency_s=latency,
                attempts=attempt,
                raw=completion.model_dump(),
                finish_reason=choice.finish_reason,
                model=completion.model,
                elapsed_s=time.perf_counter() - started,
            )
        last.attempts = attempt
        if not last.retryable or attempt >= max_attempts:
            break
        delay = backoff_delay(attempt, settings, retry_after)
        log.warning(
            "LLM call failed (attempt %d/%d, %s): %s; retrying in %.2f s",
            attempt,
            max_attempts,
            last.kind,
            last.message,
            delay,
        )
        sleep(delay)
    assert last is not None
    if last.retryable and last.attempts > 1:
        last.message = f"{last.message} (gave up after {last.attempts} attempts)"
        last.args = (last.message,)
    raise last from None


def chat_parsed(
    settings: ProviderSettings,
    messages: Sequence[Mapping[str, Any]],
    parser: str = "json",
    *,
    parser_options: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    limiter: AbstractContextManager[Any] | None = None,
    max_repairs: int = 1,
    lang: str = "en",
) -> ParsedResult:
    """:func:`chat`, then parse the answer; on :class:`~parsers.ParseFailure` send the bad
    answer back with :func:`parsers.repair_prompt` up to ``max_repairs`` times. Raises the last
    ParseFailure. Token counts in the returned result are summed over the rounds."""
    options = dict(parser_options or {})
    conversation = [dict(m) for m in messages]
    prompt_tokens = completion_tokens = 0
    for repairs in range(max_repairs + 1):
        result = chat(settings, conversation, params=params, limiter=limiter)
        prompt_tokens += result.prompt_tokens or 0
        completion_tokens += result.completion_tokens or 0
        try:
            value = parsers.parse(parser, result.content, **options)
        except parsers.ParseFailure as failure:
            if repairs >= max_repairs:
                raise
            conversation = conversation + [
                {"role": "assistant", "content": result.content},
                {
                    "role": "user",
                    "content": parsers.repair_prompt(
                        result.content,
                        failure,
                        schema=options.get("schema"),
                        lang=lang,
                        expected="JSON" if parser == "json" else None,
                    ),
                },
            ]
            continue
        result.prompt_tokens = prompt_tokens
        result.completion_tokens = completion_tokens
        return ParsedResult(value=value, result=result, repairs=repairs)
    raise AssertionError("unreachable")  # pragma: no cover


def test_connection(settings: ProviderSettings) -> dict[str, Any]:
    """Check that the provider answers: list models, else a 1-token chat. Never raises.

    Returns ``{"ok", "method": "models"|"chat", "models": [ids] | None, "model_listed":
    bool | None, "latency_s", "error": str | None, "status_code": int | None}``.
    """
    client = _client(settings)
    timeout = min(settings.timeout, 15.0)
    report: dict[str, Any] = {
        "ok": False,
        "method": "models",
        "models": None,
        "model_listed": None,
        "latency_s": None,
        "error": None,
        "status_code": None,
    }
    t0 = time.perf_counter()
    try:
        page = client.models.list(timeout=timeout)
        ids = sorted({m.id for m in page.data})
        report.update(models=ids, model_listed=settings.model in ids)
        report["latency_s"] = time.perf_counter() - t0
        if settings.model in ids:
            report["ok"] = True
            return report
    except openai.OpenAIError as exc:
        error, _ = _classify(exc, settings)
        if error.kind == "auth":
            report.update(
                error=error.message,
                status_code=error.status_code,
                latency_s=time.perf_counter() - t0,
            )
            return report
    except Exception as exc:  # noqa: BLE001 - a report, not a crash
        log.debug("model listing failed: %s", type(exc).__name__)
    # The model is not listed (or listing is not supported): try it.
    report["method"] = "chat"
    one_shot = ProviderSettings(
        base_url=settings.base_url,
        model=settings.model,
        api_key=settings.api_key,
        timeout=timeout,
        max_retries=0,
        extra_body=settings.extra_body,
    )
    t0 = time.perf_counter()
    try:
        chat(one_shot, [{"role": "user", "content": "ping"}], params={"max_tokens": 1})
    except LLMError as exc:
        report.update(error=exc.message, status_code=exc.status_code)
    else:
        report["ok"] = True
    report["latency_s"] = time.perf_counter() - t0
    return report


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
