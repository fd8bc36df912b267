"""One JSON error shape for the whole API: ``{"error": {"code", "message", "details"}}``."""
from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 1
RETRY_MARK = "x-annotune-retryable"  # internal: set on a 503 the retry middleware may re-run


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None,
                 details: list[dict[str, Any]] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code
        self.details = details or []
        self.extra = extra or {}


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class Invalid(AppError):
    status_code = 422
    code = "validation_error"


class TooLarge(AppError):
    status_code = 413
    code = "too_large"


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"


class ErrorDetail(BaseModel):
    """One problem with the request: usually the field (``body.name``, ``query.limit``) and why."""

    model_config = ConfigDict(extra="allow")
    field: str | None = None
    message: str | None = None
    type: str | None = None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # some errors add context (``limit_bytes``, ...)
    code: str = Field(description="stable machine-readable error code", examples=["not_found"])
    message: str = Field(description="what went wrong, for people")
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """The body of every error the API sends (4xx and 5xx), built by ``error_body``."""

    error: ErrorInfo


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None,
               **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "details": details or []}
    body.update(extra)
    return {"error": body}


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(error_body(exc.code, exc.message, exc.details, **exc.extra),
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = details[0]["field"] if details else ""
        return JSONResponse(
            error_body("validation_error", f"invalid request: {first}", details), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                403: "forbidden", 413: "too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        return database_error_response(request, exc)

    @app.exception_handler(PoolTimeout)
    async def _pool(request: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("no database connection free for %s %s", request.method, request.url.path)
        return JSONResponse(error_body("database_busy", "the database is busy; retry"),
                            status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def is_transient(exc: DBAPIError) -> bool:
    """A database error that says nothing about the request: the connection dropped (a server
    restart, ``pg_terminate_backend``), the server is unreachable, SQLite stayed busy."""
    return bool(exc.connection_invalidated) or isinstance(exc, OperationalError)


def database_error_response(request: Request, exc: DBAPIError) -> JSONResponse:
    """503 with ``Retry-After`` for a transient fault; a value the database refused is the
    client's (422, e.g. a string longer than its column), a constraint it broke a 409; the
    input layer (service/core/sanitize.py) and the services catch these first, this is the
    backstop."""
    if is_transient(exc):
        log.warning("database unavailable for %s %s: %s", request.method, request.url.path,
                    str(exc.orig).strip().splitlines()[0] if exc.orig else exc)
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        if not getattr(exc, "at_commit", False):
            headers[RETRY_MARK] = "1"  # nothing was committed: the whole request may run again
        return JSONResponse(error_body("database_unavailable",
                                       "the database is unavailable for a moment; retry"),
                            status_code=503, headers=headers)
    if isinstance(exc, DataError):
        return JSONResponse(error_body("invalid_value", "a value in the request cannot be stored"),
                            status_code=422)
    if isinstance(exc, IntegrityError):
        return JSONResponse(error_body("conflict", "the change conflicts with existing data"),
                            status_code=409)
    raise exc


class RetryTransient:
    """Runs a request once more when its first attempt ended in a transient database fault
    before anything was committed (the 503 carries ``RETRY_MARK``): reads always, writes whose
    body is small enough to replay (JSON, forms; never multipart uploads, which write files).
    A second failure, or a fault at COMMIT (outcome unknown), reaches the client as the 503
    with ``Retry-After``."""

    def __init__(self, app: ASGIApp, max_replay_bytes: int = 16 * 1024 * 1024) -> None:
        self.app = app
        self.max_replay_bytes = max_replay_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctype = dict(scope.get("headers") or []).get(b"content-type", b"")
        if ctype.startswith(b"multipart/"):
            await self.app(scope, receive, _strip_mark(send))
            return
        retry_scope = {**scope, "state": dict(scope.get("state") or {})}  # before the 1st run
        recorded: list[Message] = []
        size = 0
        replayable = True

        async def recording_receive() -> Message:
            nonlocal size, replayable
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                replayable = replayable and size <= self.max_replay_bytes
                if replayable:
                    recorded.append(message)
            return message

        held: dict[str, Any] = {}

        async def holding_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                names = {k.lower() for k, _ in message.get("headers", [])}
                if RETRY_MARK.encode() in names and replayable:
                    held["start"] = message
                    return
            if "start" in held:
                return  # the body of the held 503
            await send(message)

        await self.app(scope, recording_receive, holding_send)
        if "start" not in held:
            return
        complete = not recorded or not recorded[-1].get("more_body", False)
        if not (replayable and complete):
            await _send_held(send, held["start"])
            return
        log.info("retrying %s %s after a transient database fault", scope["method"], scope["path"])
        replay = list(recorded) or [{"type": "http.request", "body": b"", "more_body": False}]

        async def replay_receive() -> Message:
            return replay.pop(0) if replay else await receive()

        # a fresh request.state: nothing cached by the first attempt (its session is gone)
        await self.app(retry_scope, replay_receive, _strip_mark(send))


def _strip_mark(send: Send) -> Send:
    async def strip(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [(k, v) for k, v in message.get("headers", [])
                                              if k.lower() != RETRY_MARK.encode()]}
        await send(message)
    return strip


async def _send_held(send: Send, start: Message) -> None:
    body = orjson.dumps(error_body("database_unavailable",
                                   "the database is unavailable for a moment; retry"))
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in
               (RETRY_MARK.encode(), b"content-length")]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})

