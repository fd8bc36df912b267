"""Swagger UI at /docs and ReDoc at /redoc (and the OpenAPI document at /openapi.json too), from assets served by the app itself (the
``fastapi-offline`` package ships them), so the API reference works with no network. The pages
load their start-up code from /static/apidocs.js: no inline script."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from service.core.deps import Public
from service.core.templating import render

ASSETS_URL = "/docs-assets"
router = APIRouter(include_in_schema=False)


def assets() -> StaticFiles:
    import fastapi_offline

    return StaticFiles(directory=str(Path(fastapi_offline.__file__).resolve().parent / "static"))


def _page(request: Request, ui: str) -> HTMLResponse:
    return render(request, "pages/apidocs.html", ui=ui, assets=ASSETS_URL,
                  openapi_url=request.app.openapi_url, title=request.app.title)


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request, _: Public) -> HTMLResponse:
    """Swagger UI: try the REST API from the browser."""
    return _page(request, "swagger")


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request, _: Public) -> HTMLResponse:
    """ReDoc: the REST API reference."""
    return _page(request, "redoc")


@router.get("/openapi.json")
def openapi_document(request: Request, _: Public) -> JSONResponse:
    """The OpenAPI document at the conventional address (it also lives at /api/v1/openapi.json)."""
    return JSONResponse(request.app.openapi())
