"""A real HTTP server that speaks the OpenAI chat-completions protocol, for tests and benches.

It runs in a background thread (``with FakeOpenAIServer() as server:``) or as its own process
(``python -m tests.support.openai_server --latency 0.1``, which prints ``READY <base url>``).

- ``POST /v1/chat/completions``: answers from a FIFO script of actions (:class:`Reply`,
  :class:`Fail`, :class:`Hang`, :class:`RawBody`), then from ``responder`` (default: echo the
  last user message). ``latency`` seconds are added to every chat request.
- ``GET /v1/models``: the model list.
- ``GET /_stats`` / ``POST /_reset``: counters for a server in another process.

It measures the number of chat requests in flight (``max_in_flight``), records every request
(headers and JSON body) and can demand an API key (``require_key``), answering 401 with a body
that echoes the key it got, like a careless proxy would, so tests can check redaction.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Reply:
    content: str | None = "ok"
    reasoning_content: str | None = None
    finish_reason: str = "stop"
    delay: float = 0.0
    usage: bool = True


@dataclass
class Fail:
    status: int = 500
    message: str = "internal error"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Hang:
    """Sleep ``seconds`` before answering (a client with a shorter timeout gives up)."""

    seconds: float
    then: Reply = field(default_factory=Reply)


@dataclass
class RawBody:
    """Send these bytes as the response body (e.g. not JSON at all)."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


Action = Reply | Fail | Hang | RawBody


def rate_limited(retry_after: float | str = 1) -> Fail:
    return Fail(429, "rate limit reached", {"Retry-After": str(retry_after)})


def server_error(status: int = 500) -> Fail:
    return Fail(status, "the server had an error")


def echo_responder(request: dict[str, Any]) -> str:
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    last = users[-1]["content"] if users else ""
    if isinstance(last, list):  # content parts
        last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
    return f"echo: {last}"


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        latency: float = 0.0,
        model: str = "fake-model",
        models: list[str] | None = None,
        responder: Callable[[dict[str, Any]], str | Action] | None = None,
        require_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record: bool = True,
    ):
        self.latency = latency
        self.model = model
        self.models = models if models is not None else [model]
        self.responder = responder or echo_responder
        self.require_key = require_key
        self.record = record
        self._script: collections.deque[Action] = collections.deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.chat_requests = 0
        self.connections = 0  # TCP connections accepted (a client reusing its own opens few)
        # tokens sent in ``usage`` of the completions served (what a client must account for)
        self.served_prompt_tokens = 0
        self.served_completion_tokens = 0
        self._httpd = _Server((host, port), _Handler)
        self._httpd.app = self
        self._thread: threading.Thread | None = None

    # --- control ---

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    def script(self, *actions: Action) -> None:
        """Queue actions; each chat request takes the next one (then falls back to responder)."""
        with self._lock:
            self._script.extend(actions)

    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.max_in_flight = self.in_flight
            self.chat_requests = 0
            self.served_prompt_tokens = self.served_completion_tokens = 0

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "chat_requests": self.chat_requests,
                "connections": self.connections,
                "served_prompt_tokens": self.served_prompt_tokens,
                "served_completion_tokens": self.served_completion_tokens,
            }

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="fake-openai-server",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- used by the handler ---

    def _next_action(self, request: dict[str, Any]) -> Action:
        with self._lock:
            if self._script:
                return self._script.popleft()
        answer = self.responder(request)
        return Reply(answer) if isinstance(answer, str) else answer

    def _enter(self, headers: dict[str, str], body: Any) -> None:
        with self._lock:
            self.in_flight += 1
            self.chat_requests += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            if self.record:
                self.requests.append({"headers": headers, "json": body})

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def completion(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.reasoning_content is not None:
            message["reasoning_content"] = reply.reasoning_content
        prompt_tokens = sum(
            len(str(m.get("content", "")).split()) for m in request.get("messages", [])
        )
        completion_tokens = len((reply.content or "").split())
        out: dict[str, Any] = {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
        }
        if reply.usage:
            with self._lock:
                self.served_prompt_tokens += prompt_tokens
                self.served_completion_tokens += completion_tokens
            out["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            }
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # many clients connect at once in the benches
    allow_reuse_address = True
    app: FakeOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm
        # holds the body back until the client's delayed ACK (~40 ms) on every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.app._lock:
            self.server.app.connections += 1

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            self.close_connection = True

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = {429: "rate_limit_error", 401: "invalid_request_error"}.get(status, "server_error")
        self._json(status, {"error": {"message": message, "type": kind, "code": None}}, headers)

    def do_GET(self) -> None:
        app = self.server.app
        if self.path.rstrip("/") == "/v1/models":
            if not self._authorized():
                return
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in app.models
            ]
            self._json(200, {"object": "list", "data": data})
        elif self.path == "/_stats":
            self._json(200, app.stats())
        else:
            self._error(404, f"no route {self.path}")

    def _authorized(self) -> bool:
        app = self.server.app
        if app.require_key is None:
            return True
        got = self.headers.get("Authorization", "")
        if got == f"Bearer {app.require_key}":
            return True
        # Deliberately careless: echo what was sent, so clients must redact it.
        self._error(401, f"Incorrect API key provided: {got.removeprefix('Bearer ')}")
        return False

    def do_POST(self) -> None:
        app = self.server.app
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path == "/_reset":
            app.reset()
            self._json(200, {"ok": True})
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route {self.path}")
            return
        try:
            request = json.loads(raw or b"{}")
        except ValueError:
            self._error(400, "body is not JSON")
            return
        app._enter(dict(self.headers.items()), request)
        try:
            if not self._authorized():
                return
            action = app._next_action(request)
            if app.latency:
                time.sleep(app.latency)
            if isinstance(action, Hang):
                time.sleep(action.seconds)
                action = action.then
            if isinstance(action, (Reply, Fail)) and action.delay:
                time.sleep(action.delay)
            if isinstance(action, Fail):
                self._error(action.status, action.message, action.headers)
            elif isinstance(action, RawBody):
                self._send(action.status, action.body, content_type=action.content_type)
            else:
                self._json(200, app.completion(request, action))
        finally:
            app._leave()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per chat request")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--no-record", action="store_true", help="do not keep request bodies")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        latency=args.latency,
        model=args.model,
        host=args.host,
        port=args.port,
        record=not args.no_record,
    )
    print(f"READY {server.url}", flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
