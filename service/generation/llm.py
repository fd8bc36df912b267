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
from service.generation.llm_types import (
    LLMError,
    LLMResult,
    ParsedResult,
    ProviderSettings,
    Truncated,
    Usage,
)

__all__ = [
    "LLMError",
    "LLMResult",
    "ParsedResult",
    "ProviderSettings",
    "Truncated",
    "Usage",
    "backoff_delay",
    "chat",
    "chat_parsed",
    "close_clients",
    "parsed_loop",
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
    usage: Usage | None = None,
) -> LLMResult:
    """One chat completion, retried as described in the module docstring.

    ``params`` override ``settings.default_params``; keys the endpoint does not name (``top_k``,
    ``chat_template_kwargs``) and ``params["extra_body"]`` go into the request body, merged over
    ``settings.extra_body``. ``limiter`` is entered around each HTTP request. ``usage`` adds up
    every request sent, every retry and the tokens of every completion received, also when the
    call ends in :class:`LLMError`.
    """
    kwargs, extra = request_kwargs(settings, params)
    client = get_client(settings)
    started = time.perf_counter()
    max_attempts = settings.max_retries + 1
    last: LLMError | None = None
    for attempt in range(1, max_attempts + 1):
        retry_after: float | None = None
        if usage is not None:
            usage.requests += 1
            usage.retries += attempt > 1
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
            if usage is not None:
                usage.add_tokens(getattr(completion, "usage", None))
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
            reported = completion.usage
            return LLMResult(
                content=content,
                reasoning=reasoning,
                prompt_tokens=getattr(reported, "prompt_tokens", None),
                completion_tokens=getattr(reported, "completion_tokens", None),
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


Send = Callable[[list[dict[str, Any]], Mapping[str, Any], Usage], LLMResult]
"""One model call: ``(conversation, params, usage) -> LLMResult`` (``usage`` to add to)."""


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
    usage: Usage | None = None,
    check: Callable[[Any, str], Any] | None = None,
    length_retries: int | None = None,
) -> ParsedResult:
    """:func:`chat`, then parse the answer (:func:`parsed_loop`)."""

    def send(conversation: list[dict[str, Any]], call_params: Mapping[str, Any],
             spent: Usage) -> LLMResult:
        return chat(settings, conversation, params=call_params, limiter=limiter, usage=spent)

    return parsed_loop(send, messages, parser, parser_options=parser_options, params=params,
                       max_repairs=max_repairs, lang=lang, usage=usage, check=check,
                       length_retries=length_retries,
                       default_max_tokens=settings.default_params.get("max_tokens"))


def larger_budget(params: Mapping[str, Any], default_max_tokens: Any,
                  result: LLMResult) -> dict[str, Any]:
    """``params`` with twice the token budget the cut-off answer had (its own
    ``completion_tokens`` when no budget was set: the server's default)."""
    budget = params.get("max_tokens") or default_max_tokens or 0
    spent = result.completion_tokens or 0
    return {**params, "max_tokens": 2 * max(int(budget), spent, 128)}


def parsed_loop(
    send: Send,
    messages: Sequence[Mapping[str, Any]],
    parser: str = "json",
    *,
    parser_options: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    max_repairs: int = 1,
    lang: str = "en",
    usage: Usage | None = None,
    check: Callable[[Any, str], Any] | None = None,
    length_retries: int | None = None,
    default_max_tokens: Any = None,
) -> ParsedResult:
    """Call the model, parse the answer, and on :class:`~parsers.ParseFailure` (from the parser
    or from ``check(value, raw)``, which returns the value to keep) send the bad answer back with
    :func:`parsers.repair_prompt` up to ``max_repairs`` times; raises the last ParseFailure.

    ``length_retries``: an answer cut off by the token budget (``finish_reason`` ``length``) is
    never parsed: the same request is sent again with twice the budget, at most that many
    times, then :class:`Truncated` is raised (``None``: a cut-off answer is parsed like any).
    Token counts in the returned result are summed over the rounds; ``usage`` (when given)
    receives every request's cost, also when this raises."""
    options = dict(parser_options or {})
    conversation = [dict(m) for m in messages]
    spent = usage if usage is not None else Usage()
    before = (spent.prompt_tokens, spent.completion_tokens)
    call_params: dict[str, Any] = dict(params or {})
    cut = 0
    repairs = 0
    while True:
        result = send(conversation, call_params, spent)
        if length_retries is not None and result.finish_reason == "length":
            if cut >= length_retries:
                raise Truncated(
                    f"the answer was cut off at the token budget ({result.completion_tokens} "
                    f"completion tokens, finish_reason 'length')"
                    + (f", also with max_tokens {call_params['max_tokens']}" if cut else ""),
                    result.content)
            cut += 1
            spent.retries += 1
            call_params = larger_budget(call_params, default_max_tokens, result)
            continue
        try:
            value = parsers.parse(parser, result.content, **options)
            if check is not None:
                value = check(value, result.content)
        except parsers.ParseFailure as failure:
            if repairs >= max_repairs:
                raise
            repairs += 1
            spent.repairs += 1
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
        result.prompt_tokens = spent.prompt_tokens - before[0]
        result.completion_tokens = spent.completion_tokens - before[1]
        return ParsedResult(value=value, result=result, repairs=repairs)


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
