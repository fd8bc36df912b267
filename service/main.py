"""The FastAPI application: REST under /api/v1, browser pages, static files. No torch here."""
from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core import openapi, sanitize
from service.core.config import get_settings
from service.core.deps import sqlite_write_gate
from service.core.errors import AppError, RetryTransient, Unauthorized, install_error_handlers
from service.core.limits import BodySizeLimit
from service.core.logging import configure_logging, request_id_var
from service.core.templating import render

log = logging.getLogger("annotune.access")
STATIC_DIR = Path(__file__).resolve().parent / "static"


def _routers() -> list:
    from service import apidocs, health
    from service.auth import api as auth_api
    from service.auth import pages as auth_pages
    from service.projects import api as projects_api
    from service.projects import pages as projects_pages

    routers = [health.router, apidocs.router, auth_api.router, auth_pages.router, projects_api.router,
               projects_pages.router]
    # domain packages register themselves here as they land
    import importlib

    for module in ("service.samples.api", "service.samples.pages", "service.review.api",
                   "service.review.pages", "service.documents.api",
                   "service.documents.pages", "service.datasets.api", "service.datasets.pages",
                   "service.generation.api", "service.generation.pages", "service.training.api",
                   "service.training.pages", "service.evaluation.api", "service.evaluation.pages",
                   "service.users.api", "service.users.pages", "service.preferences.api",
                   "service.preferences.pages", "service.diversity.api",
                   "service.diversity.pages"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not module.startswith(exc.name):
                raise
            continue
        routers.append(mod.router)
    return routers


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
       "form-action 'self'; frame-ancestors 'none'")
# Swagger UI and ReDoc set styles from their scripts (ReDoc adds <style> elements): their pages
# only may use inline styles; scripts stay 'self' everywhere
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def _csp(path: str) -> str:
    return DOCS_CSP if path.startswith(("/docs", "/redoc")) else CSP


class RequestContext:
    """Pure ASGI middleware (no task and stream per request, as ``@app.middleware("http")``
    costs): a request id for the logs and the ``X-Request-ID`` header, the security headers
    unless the route set its own, and one access-log line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex[:16]
        path = scope.get("path", "")
        status = 500
        start = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = MutableHeaders(scope=message)
                out["X-Request-ID"] = rid
                for name, value in (("X-Content-Type-Options", "nosniff"),
                                    ("X-Frame-Options", "DENY"),
                                    ("Referrer-Policy", "same-origin"),
                                    ("Content-Security-Policy", _csp(path))):
                    out.setdefault(name, value)
            await send(message)

        token = request_id_var.set(rid)
        try:
            await self.app(scope, receive, send_with_headers)
            log.info("%s %s %s %.1fms", scope.get("method"), path, status,
                     (time.perf_counter() - start) * 1000)
        finally:
            request_id_var.reset(token)


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    app = FastAPI(title="annotune", version="0.1.0", docs_url=None, redoc_url=None,
                  openapi_url="/api/v1/openapi.json",  # /docs and /redoc: service/apidocs.py
                  dependencies=[Depends(sanitize.check_request),  # one input sanitation layer
                                Depends(sqlite_write_gate, scope="function")])
    install_error_handlers(app)
    openapi.install(app)  # the error envelope, the bearer scheme: service/core/openapi.py
    json_http_error = app.exception_handlers[StarletteHTTPException]

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/api/") or request.headers.get("accept") == "application/json"

    @app.exception_handler(StarletteHTTPException)
    async def _http_page_or_json(request: Request, exc: StarletteHTTPException) -> Response:
        """Unknown URLs (and other HTTP errors) of the browser pages answer the HTML error page."""
        if wants_json(request):
            return await json_http_error(request, exc)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = {404: "There is no page at this address."}.get(exc.status_code, str(exc.detail))
        page = render(request, "pages/error.html", status_code=exc.status_code,
                      error_status=exc.status_code, detail=detail, code=code)
        page.headers.update(getattr(exc, "headers", None) or {})
        return page

    @app.exception_handler(AppError)
    async def _pages_or_json(request: Request, exc: AppError) -> Response:
        if wants_json(request):
            from fastapi.responses import JSONResponse

            from service.core.errors import error_body

            headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
            return JSONResponse(error_body(exc.code, exc.message, exc.details, **exc.extra),
                                status_code=exc.status_code, headers=headers)
        if isinstance(exc, Unauthorized):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        return render(request, "pages/error.html", status_code=exc.status_code,
                      error_status=exc.status_code, detail=exc.message, code=exc.code)

    app.add_middleware(RequestContext)  # request id, security headers, the access log
    app.add_middleware(RetryTransient)  # a database fault before COMMIT: the request once more
    app.add_middleware(BodySizeLimit)  # outermost: 413 while the body streams in
    from service import apidocs

    app.mount(apidocs.ASSETS_URL, apidocs.assets(), name="docs-assets")
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> RedirectResponse:  # browsers ask for it whatever the page declares
        return RedirectResponse("/static/favicon.svg", status_code=301)

    routers = _routers()
    for router in routers:
        app.include_router(router)
    app.state.routers = routers  # walked by tests/test_access.py
    return app
