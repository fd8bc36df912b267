"""Request body size caps, enforced while the body streams in (ASGI middleware).

A body over its cap is refused with 413 as soon as the declared ``Content-Length`` or the bytes
received so far pass it, before the handler sees the rest of it. The cap depends on the kind of
body: ``max_import_bytes`` for multipart sample imports, ``max_upload_request_bytes`` for other
multipart uploads (documents: each file is also held to ``max_upload_bytes`` as it is stored),
``max_body_bytes`` for everything else (JSON, forms).
"""
from __future__ import annotations

import orjson
from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitResponder
from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.config import get_settings
from service.core.errors import error_body


def body_limit(scope: Scope) -> int:
    settings = get_settings()
    ctype = Headers(scope=scope).get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        if scope.get("path", "").rstrip("/").endswith("/imports"):
            return settings.max_import_bytes
        return settings.max_upload_request_bytes
    return settings.max_body_bytes


async def _refuse(send: Send, limit: int) -> None:
    body = orjson.dumps(error_body("too_large", f"request body larger than {limit} bytes",
                                   limit_bytes=limit))
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        # Starlette's limiter counts the streamed bytes; FastAPI turns its signal into a 413 that
        # the app's handler answers as JSON (code too_large), even through BaseHTTPMiddleware.
        await RequestBodyLimitResponder(self.app, limit)(scope, receive, send)
