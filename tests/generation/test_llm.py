"""The LLM client against a real HTTP server speaking the OpenAI protocol."""

from __future__ import annotations

import logging
import pickle
import random
import socket
import time
import traceback

import pytest

from service.generation import llm, llm_http, parsers
from service.generation.llm import LLMError, ProviderSettings, chat
from service.generation.parsers import ParseFailure
from tests.support.openai_server import (
    Fail,
    FakeOpenAIServer,
    Hang,
    RawBody,
    Reply,
    rate_limited,
    server_error,
)

SECRET = "sk-test-SECRET-do-not-leak-8c1f0e5a"
USER = [{"role": "user", "content": "什么是 LoRA？"}]


@pytest.fixture
def server():
    with FakeOpenAIServer(require_key=SECRET) as srv:
        yield srv
    llm.close_clients()


def settings_for(server: FakeOpenAIServer, **overrides) -> ProviderSettings:
    values = {
        "base_url": server.url,
        "model": "fake-model",
        "api_key": SECRET,
        "timeout": 5.0,
        "max_retries": 3,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    values.update(overrides)
    return ProviderSettings(**values)


# --- plain calls ---------------------------------------------------------------------------


def test_scripted_answers_in_order_and_request_body(server):
    server.script(Reply("first answer"), Reply("second answer"))
    settings = settings_for(
        server,
        default_params={"temperature": 0.7, "max_tokens": 64},
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    one = chat(settings, USER, params={"temperature": 0.0, "top_k": 20, "seed": 3})
    two = chat(settings, USER)
    assert (one.content, two.content) == ("first answer", "second answer")
    assert one.attempts == 1 and one.reasoning is None
    assert one.prompt_tokens == 2 and one.completion_tokens == 2
    assert one.latency_s > 0 and one.finish_reason == "stop" and one.model == "fake-model"
    assert one.raw["choices"][0]["message"]["content"] == "first answer"

    body = server.requests[0]["json"]
    assert body["model"] == "fake-model"
    assert body["messages"] == USER
    assert body["temperature"] == 0.0  # params override default_params
    assert body["max_tokens"] == 64
    assert body["seed"] == 3
    assert body["top_k"] == 20  # not an OpenAI parameter: sent in the body
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert server.requests[1]["json"]["temperature"] == 0.7


def test_default_responder_echoes(server):
    assert chat(settings_for(server), USER).content == "echo: 什么是 LoRA？"


def test_extra_body_is_deep_merged(server):
    settings = settings_for(server, extra_body={"chat_template_kwargs": {"a": 1, "b": 2}})
    chat(settings, USER, params={"extra_body": {"chat_template_kwargs": {"b": 3}}})
    assert server.requests[0]["json"]["chat_template_kwargs"] == {"a": 1, "b": 3}


# --- retries -------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_and_honoured(server):
    server.script(rate_limited(0.6), Reply("after the wait"))
    t0 = time.monotonic()
    result = chat(settings_for(server), USER)
    elapsed = time.monotonic() - t0
    assert result.content == "after the wait"
    assert result.attempts == 2
    assert elapsed >= 0.6  # backoff alone would be <= 0.05 s
    assert server.stats()["chat_requests"] == 2


def test_5xx_are_retried(server):
    server.script(server_error(500), server_error(503), Reply("third time lucky"))
    result = chat(settings_for(server), USER)
    assert (result.content, result.attempts) == ("third time lucky", 3)


def test_timeout_is_retried(server):
    server.script(Hang(5.0), Reply("fast now"))
    t0 = time.monotonic()
    result = chat(settings_for(server, timeout=0.4), USER)
    assert result.content == "fast now"
    assert result.attempts == 2
    assert time.monotonic() - t0 < 3.0  # did not wait for the hung answer (5 s)


def test_unreadable_body_is_retried(server):
    server.script(RawBody(b"<html>bad gateway</html>"), Reply("ok"))
    assert chat(settings_for(server), USER).attempts == 2


def test_gives_up_after_bounded_attempts(server):
    server.script(*[server_error() for _ in range(5)])
    with pytest.raises(LLMError) as info:
        chat(settings_for(server, max_retries=2), USER)
    err = info.value
    assert err.attempts == 3 and err.kind == "server" and err.status_code == 500
    assert "gave up after 3 attempts" in str(err)
    assert server.stats()["chat_requests"] == 3


@pytest.mark.parametrize("status", [400, 404, 422])
def test_other_4xx_fail_at_once(server, status):
    server.script(Fail(status, "bad request: unknown field"))
    with pytest.raises(LLMError) as info:
        chat(settings_for(server), USER)
    assert info.value.status_code == status and info.value.attempts == 1
    assert not info.value.retryable
    assert "unknown field" in str(info.value)
    assert server.stats()["chat_requests"] == 1


def test_connection_errors_are_retried_then_fail():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ProviderSettings(
        base_url=f"http://127.0.0.1:{port}/v1",
        model="m",
        api_key=SECRET,
        max_retries=2,
        backoff_base=0.01,
    )
    with pytest.raises(LLMError) as info:
        chat(settings, USER)
    assert info.value.kind == "connection" and info.value.attempts == 3


def test_backoff_full_jitter_and_retry_after():
    settings = ProviderSettings(
        base_url="http://x/v1", model="m", backoff_base=1.0, backoff_max=8.0, retry_after_max=30.0
    )
    random.seed(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)]:
        delays = [llm.backoff_delay(attempt, settings) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # full jitter spans the range
    assert llm.backoff_delay(1, settings, retry_after=5.0) >= 5.0
    assert llm.backoff_delay(1, settings, retry_after=600.0) <= 30.0  # capped
    assert llm_http._retry_after({"retry-after-ms": "250"}) == 0.25
    assert llm_http._retry_after({"retry-after": "3"}) == 3.0
    assert llm_http._retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert llm_http._retry_after({}) is None


def test_limiter_held_only_during_requests(server):
    events: list[str] = []

    class Reusable:
        def __enter__(self):
            events.append("enter")

        def __exit__(self, *exc):
            events.append("exit")

    server.script(server_error(), Reply("ok"))

    def sleep(seconds: float) -> None:
        events.append("sleep")

    chat(settings_for(server), USER, limiter=Reusable(), sleep=sleep)
    assert events == ["enter", "exit", "sleep", "enter", "exit"]


def test_concurrent_calls_reuse_their_connections():
    """64 threads, three calls each: the client keeps one connection per concurrent call open
    (with 20 kept, each round of 64 calls opened 44 new ones, resolved and checked again)."""
    import threading

    threads, rounds = 64, 3
    with FakeOpenAIServer(latency=0.2) as srv:
        settings = settings_for(srv)
        barrier = threading.Barrier(threads)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                for _ in range(rounds):
                    barrier.wait()
                    chat(settings, USER)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        pool = [threading.Thread(target=run) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        stats = srv.stats()
    llm.close_clients()
    assert not errors
    assert stats["chat_requests"] == threads * rounds
    assert stats["max_in_flight"] == threads
    assert stats["connections"] == threads


# --- output: reasoning and parsing ---------------------------------------------------------


@pytest.mark.parametrize(
    "reply, content, reasoning",
    [
        (
            Reply("<think>需要回忆定义</think>\n\nLoRA 是低秩适配。"),
            "LoRA 是低秩适配。",
            "需要回忆定义",
        ),
        (Reply("first thoughts</think>answer"), "answer", "first thoughts"),  # opened in prompt
        (Reply("answer<think>cut off mid-tho"), "answer", "cut off mid-tho"),  # truncated
        (Reply("answer", reasoning_content="vLLM reasoning"), "answer", "vLLM reasoning"),
        (Reply(None), "", None),
    ],
)
def test_reasoning_is_separated(server, reply, content, reasoning):
    server.script(reply)
    result = chat(settings_for(server), USER)
    assert (result.content, result.reasoning) == (content, reasoning)


def test_malformed_json_output_raises_parse_failure(server):
    server.script(Reply('{"instruction": "总结", "output": '))
    result = chat(settings_for(server), USER)
    with pytest.raises(ParseFailure) as info:
        parsers.parse("json", result.content)
    assert info.value.raw == '{"instruction": "总结", "output":'


def test_chat_parsed_repairs_once(server):
    server.script(Reply("```json\n{'score': 4}\n```"), Reply('{"score": 4, "rationale": "ok"}'))
    schema = {"type": "object", "required": ["score", "rationale"]}
    parsed = llm.chat_parsed(settings_for(server), USER, "json", parser_options={"schema": schema})
    assert parsed.value == {"score": 4, "rationale": "ok"}
    assert parsed.repairs == 1
    second = server.requests[1]["json"]["messages"]
    assert second[1] == {"role": "assistant", "content": "```json\n{'score': 4}\n```"}
    assert second[2]["role"] == "user" and "could not be used" in second[2]["content"]
    assert parsed.result.prompt_tokens and parsed.result.prompt_tokens > 2  # summed

    server.script(Reply("not json"))
    with pytest.raises(ParseFailure):
        llm.chat_parsed(settings_for(server), USER, "json", max_repairs=0)


# --- test_connection -----------------------------------------------------------------------


def test_connection_lists_models(server):
    report = llm.test_connection(settings_for(server))
    assert report["ok"] and report["method"] == "models"
    assert report["models"] == ["fake-model"] and report["model_listed"]


def test_connection_falls_back_to_a_one_token_chat(server):
    report = llm.test_connection(settings_for(server, model="unlisted-model"))
    assert report["ok"] and report["method"] == "chat" and report["model_listed"] is False
    assert server.requests[-1]["json"]["max_tokens"] == 1


def test_connection_reports_bad_key(server):
    report = llm.test_connection(settings_for(server, api_key="sk-wrong-key-123456"))
    assert not report["ok"] and report["status_code"] == 401
    assert "sk-wrong-key-123456" not in report["error"]


# --- the key never leaks -------------------------------------------------------------------


def test_settings_never_show_the_key():
    settings = ProviderSettings(base_url="http://user:pw-secret@h:1/v1", model="m", api_key=SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings)
    assert settings.api_key.get_secret_value() == SECRET
    assert "pw-secret" not in settings.display_url
    assert pickle.loads(pickle.dumps(settings)).api_key.get_secret_value() == SECRET


def test_api_key_never_in_errors_or_logs(server, caplog):
    caplog.set_level(logging.DEBUG)  # everything, including openai's and httpx's debug lines
    wrong = "sk-wrong-" + SECRET[::-1]
    texts: list[str] = []

    def collect(exc: BaseException) -> None:
        texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])
        texts.append(repr(pickle.loads(pickle.dumps(exc))))

    # 401 whose body echoes the key that was sent (a careless proxy)
    with pytest.raises(LLMError) as info:
        chat(settings_for(server, api_key=wrong), USER)
    assert info.value.kind == "auth" and info.value.attempts == 1
    assert "***" in str(info.value)
    collect(info.value)

    # retried failures whose messages echo the key, then giving up
    server.script(
        Fail(500, f"upstream said {SECRET}"), rate_limited(0.01), Fail(503, f"key={SECRET}")
    )
    with pytest.raises(LLMError) as info:
        chat(settings_for(server, max_retries=2), USER)
    collect(info.value)

    # timeouts and connection errors
    server.script(Hang(1.0))
    with pytest.raises(LLMError) as info:
        chat(settings_for(server, timeout=0.2, max_retries=0), USER)
    collect(info.value)
    with pytest.raises(LLMError) as info:
        chat(
            ProviderSettings(
                base_url="http://127.0.0.1:9/v1", model="m", api_key=SECRET, max_retries=0
            ),
            USER,
        )
    collect(info.value)

    report = llm.test_connection(settings_for(server, api_key=wrong))
    texts.append(repr(report))
    server.script(Reply("fine"))
    texts.append(repr(chat(settings_for(server), USER)))

    texts.append(caplog.text)
    texts.extend(r.getMessage() for r in caplog.records)
    assert any("retrying" in t for t in texts)  # the retry warnings were captured
    for text in texts:
        assert SECRET not in text
        assert wrong not in text
    # ...while the server did receive it.
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"


def test_usage_counts_every_request_also_when_the_call_fails(server):
    """``Usage`` adds up what was served as it happens: retried requests, repair rounds, a
    cut-off answer and its larger-budget retry, and a call that ends in an error."""
    from service.generation.llm_types import Truncated, Usage
    from tests.support.openai_server import Reply, rate_limited

    settings = settings_for(server, backoff_base=0.0)
    usage = Usage()
    server.script(rate_limited(0), Reply("not json"), Reply('{"a": 1}'))
    parsed = llm.chat_parsed(settings, USER, "json", usage=usage)
    assert parsed.value == {"a": 1} and parsed.repairs == 1
    assert (usage.requests, usage.retries, usage.repairs) == (3, 1, 1)
    with pytest.raises(parsers.ParseFailure):
        llm.chat_parsed(settings, USER, "json", usage=usage, max_repairs=0)  # echo: not JSON
    server.script(Reply("cut", finish_reason="length"), Reply("cut", finish_reason="length"))
    with pytest.raises(Truncated) as cut:
        llm.chat_parsed(settings, USER, "text", usage=usage, length_retries=1,
                        params={"max_tokens": 300})
    assert cut.value.raw == "cut" and "also with max_tokens 600" in cut.value.message
    assert [r["json"].get("max_tokens") for r in server.requests[-2:]] == [300, 600]
    assert usage.requests == server.chat_requests == 6 and usage.retries == 2
    assert usage.prompt_tokens == server.served_prompt_tokens > 0
    assert usage.completion_tokens == server.served_completion_tokens > 0
