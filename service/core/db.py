"""Engine, sessions and the declarative ``Base`` shared by every model."""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, Text, create_engine, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from service.core.config import get_settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Integer on SQLite so that INTEGER PRIMARY KEY autoincrements; BIGINT elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")
JSONType = JSON().with_variant(JSONB(), "postgresql")


class CanonicalJSON(TypeDecorator[Any]):
    """JSON kept as the exact text ``orjson.dumps`` writes (compact, keys in written order, UTF-8).

    For frozen data whose bytes matter: the database stores and returns the text untouched (no
    JSONB re-rendering), so a reader can copy it to a file without parsing it, and the same value
    is the same text on PostgreSQL and SQLite. Through the ORM it reads and writes Python values.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else orjson.dumps(value).decode()

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else orjson.loads(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# SQLite: the driver's own transaction handling is switched off and BEGIN is emitted by us, lazily.
# Reads outside a writing transaction run on their own, each statement seeing the latest commit
# (as the driver did before, and like PostgreSQL's READ COMMITTED); the first write starts
# ``BEGIN IMMEDIATE``. A session that declared it writes (``session_scope()``, an unsafe HTTP
# method) starts ``BEGIN IMMEDIATE`` at its first statement, so its reads and writes are one
# consistent transaction. IMMEDIATE takes the write lock up front and waits for it under the busy
# timeout; a transaction that had read and then tried to write could not wait (SQLite answers
# "database is locked" at once when another writer committed since it read), which is how
# concurrent uploads were lost.
SQLITE_BEGIN = "annotune_sqlite_begin"  # execution option: "IMMEDIATE" (else: at the first write)
_PENDING_BEGIN = "annotune_pending_begin"
_HOLDS_WRITER = "annotune_holds_writer"
_READS = ("SELECT", "WITH", "PRAGMA", "EXPLAIN")


def _sqlite_transactions(engine: Engine, busy_timeout_ms: int) -> None:
    # Writers of this process queue on a lock before BEGIN IMMEDIATE: SQLite's busy handler
    # polls with growing sleeps, which under many concurrent writers starves some of them past
    # the timeout; a lock hands the database over in turn. Other processes still wait in the
    # busy handler.
    writer = threading.Lock()

    def _acquire(record_info: dict[str, Any]) -> None:
        if not writer.acquire(timeout=busy_timeout_ms / 1000):
            raise sqlite3.OperationalError("database is locked")
        record_info[_HOLDS_WRITER] = True

    def _release(record_info: dict[str, Any]) -> None:
        if record_info.pop(_HOLDS_WRITER, False):
            writer.release()

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see above)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.info[_PENDING_BEGIN] = conn.get_execution_options().get(SQLITE_BEGIN, "LAZY")

    @event.listens_for(engine, "before_cursor_execute")
    def _lazy_begin(conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        mode = conn.info.get(_PENDING_BEGIN)
        if mode is None:
            return
        head = statement.lstrip()[:8].upper()
        if head.startswith("PRAGMA"):
            return  # pragmas such as foreign_keys only work outside a transaction
        if mode != "IMMEDIATE" and head.startswith(_READS):
            return  # a read on its own: no transaction, no lock
        del conn.info[_PENDING_BEGIN]
        _acquire(conn.info)
        try:
            cursor.connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            _release(conn.info)
            raise

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _end(conn: Any) -> None:
        conn.info.pop(_PENDING_BEGIN, None)
        _release(conn.info)

    @event.listens_for(engine.pool, "checkin")
    @event.listens_for(engine.pool, "invalidate")
    def _returned(_dbapi_conn: Any, record: Any, *_args: Any) -> None:
        if record is not None:
            _release(record.info)


def json_dumps(value: Any) -> str:
    """How every JSON column is written, on every dialect: UTF-8 (a search of the stored text
    sees the characters, not ``\\uXXXX`` escapes), and a non-finite float as null (JSON has no
    NaN or infinity and PostgreSQL's JSONB refuses them: one diverged metric must not fail a job)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


def make_engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {"future": True, "json_serializer": json_dumps,
                              "json_deserializer": orjson.loads}
    settings = get_settings()
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False,
                                  "timeout": settings.sqlite_busy_timeout_seconds}
        # writers wait for the lock holding a connection: room for every request thread
        # (uvicorn runs sync routes on 40 threads) plus a worker, so none times out on the pool
        kwargs.update(pool_size=10, max_overflow=50, pool_timeout=settings.sqlite_busy_timeout_seconds * 2)
    else:
        kwargs.update(pool_pre_ping=True, pool_size=settings.db_pool_size,
                      max_overflow=settings.db_max_overflow)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _sqlite_transactions(engine, int(settings.sqlite_busy_timeout_seconds * 1000))
    return engine


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


@lru_cache
def _writing_engine() -> Engine:
    return get_engine().execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False, future=True)


def is_busy(exc: BaseException) -> bool:
    """SQLite's "database is locked" (the busy timeout ran out)."""
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


def open_session(*, write: bool = True) -> Session:
    """A session; ``write`` starts its SQLite transactions with ``BEGIN IMMEDIATE`` at the first
    statement (else at the first write)."""
    return get_sessionmaker()(bind=_writing_engine() if write else get_engine())


def commit(session: Session, attempts: int = 3) -> None:
    """``session.commit()``, retried when SQLite reports the database busy at COMMIT (the changes
    are still in the open transaction, so trying again is safe)."""
    session.flush()  # a failure here is before COMMIT: nothing was committed
    for attempt in range(attempts):
        try:
            session.commit()
            return
        except DBAPIError as exc:
            busy = is_busy(exc) and attempt < attempts - 1 and session.in_transaction()
            if not busy:
                exc.at_commit = True  # type: ignore[attr-defined]  # outcome unknown: no replay
                raise
            time.sleep(0.05 * (attempt + 1))


@contextmanager
def session_scope(*, write: bool = True) -> Iterator[Session]:
    """A unit of work for tasks and scripts: commit on success, roll back on error.

    ``write=False`` for a unit of work that only reads (SQLite then takes no write lock)."""
    session = open_session(write=write)
    try:
        yield session
        commit(session)
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
