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

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import openai

from service.generation import parsers
from service.generation.llm_http import (
    NoChoices,
    backoff_delay,
    classify_error,
    close_clients,
    get_client,
    redact,
    request_kwargs,
)
from service.generation.llm_reasoning import message_field, split_reasoning
from service.generation.llm_types import LLMError, LLMResult, ParsedResult, ProviderSettings

__all__ = [
    "LLMError",
    "LLMResult",
    "ParsedResult",
    "ProviderSettings",
    "backoff_delay",
    "chat",
    "chat_parsed",
    "close_clients",
    "split_reasoning",
    "test_connection",
]

log = logging.getLogger(__name__)


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
    kwargs, extra = request_kwargs(settings, params)
    client = get_client(settings)
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
                raise NoChoices()
        except openai.OpenAIError as exc:
            last, retry_after = classify_error(exc, settings)
        except NoChoices:
            last = LLMError(
                f"{settings.display_url} sent a completion without choices",
                kind="bad_response",
                retryable=True,
            )
        except ValueError as exc:  # body that is not JSON, on some client versions
            last = LLMError(
                redact(
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
                field_reasoning = message_field(message, "reasoning_content") or message_field(
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
    client = get_client(settings)
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
        error, _ = classify_error(exc, settings)
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
