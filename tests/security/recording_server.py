"""A tiny OpenAI-shaped HTTP server on 127.0.0.1 that records every request's headers."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class RecordingServer:
    def __init__(self, *, model: str = "m", status: int = 200, body: bytes | None = None,
                 redirect_to: str | None = None) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                outer.requests.append({"method": self.command, "path": self.path,
                                       "headers": {k.lower(): v for k, v in self.headers.items()}})
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body is not None:
                    payload = body
                elif self.path.endswith("/models"):
                    payload = json.dumps({"object": "list", "data": [
                        {"id": model, "object": "model", "created": 0, "owned_by": "x"}]}).encode()
                else:
                    payload = json.dumps({
                        "id": "c", "object": "chat.completion", "created": 0, "model": model,
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "pong"}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if body is None else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def authorizations(self) -> list[str]:
        return [r["headers"].get("authorization", "") for r in self.requests]
