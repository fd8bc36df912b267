"""Atomic fixed-window counters for login limits.

An attempt *reserves* its place before the password is checked: each of its keys is incremented
in one atomic step (Redis ``INCR`` when ``ANNOTUNE_REDIS_URL`` is set; otherwise one
``UPDATE ... RETURNING`` on ``rate_counters``: on PostgreSQL in a transaction of its own that
commits at once, the row lock ordering concurrent attempts; on SQLite in the request's
transaction, which holds the single write lock until it commits). So 40 simultaneous wrong
passwords are counted 1..40, and only those within the limit are checked at all. A successful
login gives its reservation back.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import case, delete, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.db import get_engine, utcnow
from service.models import RateCounter

log = logging.getLogger(__name__)
_TABLE = RateCounter.__table__


@dataclass(frozen=True)
class Limit:
    key: str
    limit: int


@dataclass(frozen=True)
class Exceeded:
    key: str
    retry_after: int
    """Seconds until the key's window ends."""


@lru_cache(maxsize=4)
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _hit_redis(client: Any, limits: list[Limit], window: int) -> list[tuple[Limit, int, int]]:
    pipe = client.pipeline(transaction=True)
    for lim in limits:
        name = f"annotune:rl:{lim.key}"
        pipe.set(name, 0, ex=window, nx=True)
        pipe.incr(name)
        pipe.ttl(name)
    replies = pipe.execute()
    out = []
    for i, lim in enumerate(limits):
        count, ttl = int(replies[3 * i + 1]), int(replies[3 * i + 2])
        out.append((lim, count, max(1, ttl)))
    return out


def _hit_db(db: Session, limits: list[Limit], window: int) -> list[tuple[Limit, int, int]]:
    engine = get_engine()
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # committed at once: concurrent attempts see the count
            return _increment(conn, pg_insert, limits, window)
    # SQLite has one writer at a time: the request's own transaction holds the write lock from
    # this first write to its commit, so counting there is atomic (a second connection would
    # wait for the request's own lock)
    return _increment(db.connection(), sqlite_insert, limits, window)


def _increment(conn: Any, insert: Any, limits: list[Limit], window: int
               ) -> list[tuple[Limit, int, int]]:
    now = utcnow()
    cutoff = now - timedelta(seconds=window)
    out = []
    for lim in sorted(limits, key=lambda x: x.key):  # one lock order: no deadlocks
        conn.execute(insert(_TABLE).values(key=lim.key, window_start=now, count=0)
                     .on_conflict_do_nothing(index_elements=["key"]))
        expired = _TABLE.c.window_start <= cutoff
        row = conn.execute(
            update(_TABLE).where(_TABLE.c.key == lim.key)
            .values(count=case((expired, 1), else_=_TABLE.c.count + 1),
                    window_start=case((expired, now), else_=_TABLE.c.window_start))
            .returning(_TABLE.c.count, _TABLE.c.window_start)
        ).one()
        left = (row.window_start + timedelta(seconds=window) - now).total_seconds()
        out.append((lim, int(row.count), max(1, math.ceil(left))))
    return out


def hit(db: Session, limits: list[Limit], *, window: int) -> Exceeded | None:
    """Count one attempt against every limit; return the tightest one exceeded, if any."""
    url = get_settings().redis_url
    results = None
    if url:
        try:
            results = _hit_redis(_redis(url), limits, window)
        except Exception as exc:  # noqa: BLE001 - Redis down: the database still counts
            log.warning("rate limit: Redis unavailable (%s); counting in the database",
                        type(exc).__name__)
    if results is None:
        results = _hit_db(db, limits, window)
    over = [Exceeded(lim.key, wait) for lim, count, wait in results if count > lim.limit]
    return max(over, key=lambda e: e.retry_after) if over else None


def give_back(db: Session, keys: list[str], *, reset: list[str] = ()) -> None:
    """Undo one reservation on ``keys`` and clear the ``reset`` keys, in ``db``'s transaction
    (so with the successful login it belongs to)."""
    url = get_settings().redis_url
    if url:
        try:
            pipe = _redis(url).pipeline(transaction=True)
            for key in keys:
                pipe.decr(f"annotune:rl:{key}")
            for key in reset:
                pipe.delete(f"annotune:rl:{key}")
            pipe.execute()
            return
        except Exception as exc:  # noqa: BLE001
            log.warning("rate limit: Redis unavailable (%s)", type(exc).__name__)
    for key in sorted(keys):
        db.execute(update(_TABLE).where(_TABLE.c.key == key, _TABLE.c.count > 0)
                   .values(count=_TABLE.c.count - 1))
    if reset:
        db.execute(delete(_TABLE).where(_TABLE.c.key.in_(list(reset))))


def describe_wait(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"
