"""Keyset pagination: ``limit`` + opaque ``cursor`` in, ``items`` + ``next_cursor`` out."""
from __future__ import annotations

import base64
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.core.errors import Invalid

T = TypeVar("T")
MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, Any]:
    invalid = Invalid("invalid cursor",
                      details=[{"field": "query.cursor", "message": "not a cursor"}])
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except ValueError as exc:
        raise invalid from exc
    if not isinstance(value, dict):
        raise invalid
    return value


LimitQ = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
CursorQ = Annotated[str | None, Query(description="opaque cursor from a previous page's next_cursor")]


def paginate(db: Session, stmt: Select[Any], id_col: InstrumentedAttribute[Any], *, limit: int,
             cursor: str | None, descending: bool = False) -> tuple[list[Any], str | None]:
    """Page ``stmt`` (selecting ORM entities) ordered by a unique integer column."""
    if cursor:
        after = decode_cursor(cursor).get("id")
        if not isinstance(after, int):
            raise Invalid("invalid cursor", details=[{"field": "query.cursor", "message": "not a cursor"}])
        stmt = stmt.where(id_col < after if descending else id_col > after)
    stmt = stmt.order_by(id_col.desc() if descending else id_col.asc()).limit(limit + 1)
    rows = list(db.scalars(stmt))
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor({"id": getattr(rows[-1], id_col.key)})
    return rows, next_cursor
