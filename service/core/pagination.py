"""Keyset pagination: ``limit`` + opaque ``cursor`` in, ``items`` + ``next_cursor`` out.

Every list endpoint answers a :class:`Page` (``next_cursor`` null on the last page) and takes
``limit`` (1 to ``MAX_LIMIT``) and ``cursor`` (``LimitQ``, ``CursorQ``); ``paginate`` pages a
query, ``paginate_items`` an in-memory registry. tests/test_openapi.py checks every GET that
answers a list."""
from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import ColumnElement, Select, literal, tuple_
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


def _bad_cursor() -> Invalid:
    return Invalid("invalid cursor", details=[{"field": "query.cursor", "message": "not a cursor"}])


def paginate(db: Session, stmt: Select[Any], id_col: InstrumentedAttribute[Any], *, limit: int,
             cursor: str | None, descending: bool = False,
             order: Sequence[ColumnElement[Any]] = ()) -> tuple[list[Any], str | None]:
    """Page ``stmt`` (selecting ORM entities) ordered by a unique integer column, or by the
    non-null ``order`` columns with that column last (a keyset over all of them: the cursor
    holds the last row's values, so rows added or removed meanwhile never shift a page)."""
    if not order:
        if cursor:
            after = decode_cursor(cursor).get("id")
            if not isinstance(after, int) or isinstance(after, bool):
                raise _bad_cursor()
            stmt = stmt.where(id_col < after if descending else id_col > after)
        stmt = stmt.order_by(id_col.desc() if descending else id_col.asc()).limit(limit + 1)
        rows = list(db.scalars(stmt))
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor({"id": getattr(rows[-1], id_col.key)})
        return rows, next_cursor
    keys: list[Any] = [*order, id_col]
    if cursor:
        after = decode_cursor(cursor).get("k")
        if (not isinstance(after, list) or len(after) != len(keys)
                or not all(isinstance(v, str | int | float) for v in after)):
            raise _bad_cursor()
        row_key = tuple_(*keys)
        last = tuple_(*(literal(v, k.type) for k, v in zip(keys, after, strict=True)))
        stmt = stmt.where(row_key < last if descending else row_key > last)
    labelled = stmt.add_columns(*(k.label(f"_page_key_{i}") for i, k in enumerate(keys)))
    found = db.execute(labelled.order_by(*(k.desc() if descending else k.asc() for k in keys))
                       .limit(limit + 1)).all()
    rows = [r[0] for r in found[:limit]]
    next_cursor = None
    if len(found) > limit:
        next_cursor = encode_cursor({"k": list(found[limit - 1][1:])})
    return rows, next_cursor


def page(db: Session, stmt: Select[Any], id_col: InstrumentedAttribute[Any], *, limit: int,
         cursor: str | None, descending: bool = False,
         order: Sequence[ColumnElement[Any]] = ()) -> dict[str, Any]:
    """:func:`paginate` as a list endpoint answers it: ``{"items", "next_cursor"}`` (``Page``)."""
    items, nxt = paginate(db, stmt, id_col, limit=limit, cursor=cursor, descending=descending,
                          order=order)
    return {"items": items, "next_cursor": nxt}


def paginate_items(items: Sequence[T], key: Callable[[T], str | int], *, limit: int,
                   cursor: str | None) -> tuple[list[T], str | None]:
    """Page an ordered in-memory sequence (a registry, not a table) by a unique key."""
    start = 0
    if cursor:
        after = decode_cursor(cursor).get("after")
        keys = [key(item) for item in items]
        if not isinstance(after, str | int) or after not in keys:
            raise _bad_cursor()
        start = keys.index(after) + 1
    chunk = list(items[start:start + limit])
    more = start + limit < len(items)
    return chunk, encode_cursor({"after": key(chunk[-1])}) if more and chunk else None
