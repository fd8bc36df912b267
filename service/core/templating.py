"""Jinja2 for browser pages: autoescaped, served with the app's own static files (no CDN)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

ROOT = Path(__file__).resolve().parents[2]
templates = Jinja2Templates(directory=str(ROOT / "templates"))
templates.env.autoescape = True


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    # plain snapshots taken at authentication time: still valid after a rollback
    context.setdefault("who", getattr(request.state, "who", None))
    context.setdefault("csrf_token", getattr(request.state, "csrf_token", ""))
    context.setdefault("nav_project", getattr(request.state, "nav_project", None))
    context.setdefault("access", getattr(request.state, "access", None))
    return templates.TemplateResponse(request, name, context, status_code=status_code)
