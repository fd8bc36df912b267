"""Test configuration: a real database (PostgreSQL when ANNOTUNE_TEST_DATABASE_URL is given,
else SQLite), migrated once with Alembic; every test starts from empty tables."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="annotune-test-"))
PG_URL = os.environ.get("ANNOTUNE_TEST_DATABASE_URL", "")


def _test_redis_url() -> str:
    """The Redis database of this test process. Under pytest-xdist each worker (gw0, gw1, ...)
    takes its own pair of databases, two below the previous worker's (14 and 15, then 12 and
    13, ...): the queues of the real Celery workers a test starts, and the limiter's keys, are
    never another test process's."""
    base = os.environ.get("ANNOTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return base
    parts = urlsplit(base)
    db = int(parts.path.strip("/") or 0) - 2 * int(worker[2:])
    if db < 0:
        raise RuntimeError(f"too many test workers for Redis databases below {base}")
    return urlunsplit(parts._replace(path=f"/{db}"))


REDIS_URL = _test_redis_url()
os.environ["ANNOTUNE_TEST_REDIS_URL"] = REDIS_URL  # tests/support/worker.py reads it


def _test_database_url() -> str:
    if not PG_URL:
        return f"sqlite:///{_TMP / 'test.db'}"
    # a fresh database per test process, next to the one we were given (created by _migrated,
    # so pytest-xdist's controlling process, which runs no test, creates none)
    from sqlalchemy.engine import make_url

    return make_url(PG_URL).set(database=f"annotune_test_{os.getpid()}").render_as_string(
        hide_password=False)


def _create_test_database() -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(DATABASE_URL).database
    admin = create_engine(make_url(PG_URL).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()


DATABASE_URL = _test_database_url()
os.environ.update({
    "ANNOTUNE_ENVIRONMENT": "test",
    "ANNOTUNE_DATABASE_URL": DATABASE_URL,
    "ANNOTUNE_DATA_DIR": str(_TMP / "data"),
    "ANNOTUNE_SECRET_KEY": "test-secret-key-not-for-production",
    "ANNOTUNE_CELERY_EAGER": "true",
    "ANNOTUNE_BROKER_URL": "memory://",
    "ANNOTUNE_LOGIN_RATE_LIMIT": "5",
    # the fake LLM servers of the tests listen on loopback; tests/security checks the refusals
    "ANNOTUNE_EGRESS_ALLOW": '["127.0.0.1", "localhost"]',
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
})

from service.core.config import get_settings

get_settings.cache_clear()
(_TMP / "data").mkdir(parents=True, exist_ok=True)

# eager mode runs tasks in this process through the worker's app (the API never imports it)
import workers.celery_app  # noqa: F401

pytest_plugins = ["tests.support.factories"]


@pytest.fixture(scope="session", autouse=True)
def _migrated() -> None:
    from service.core import migrate

    if PG_URL:
        _create_test_database()
    migrate.upgrade(DATABASE_URL)
    yield
    from service.core.db import get_engine

    get_engine().dispose()
    if PG_URL:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        admin = create_engine(make_url(PG_URL).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(DATABASE_URL).database}" WITH (FORCE)'))
        admin.dispose()


def _truncate_all() -> None:
    from sqlalchemy import text

    from service.core.db import Base, get_engine

    engine = get_engine()
    tables = [t.name for t in Base.metadata.sorted_tables]
    with engine.begin() as conn:
        # children first; no PRAGMA toggling (it would stick to a pooled connection). DELETE,
        # not TRUNCATE: a TRUNCATE of 40 tables swaps 40+ files and took 0.4-1 s per test on
        # PostgreSQL (minutes over the suite); deleting the few rows a test left takes ~10 ms
        if engine.dialect.name == "postgresql":
            conn.execute(text("; ".join(f'DELETE FROM "{t}"' for t in reversed(tables))))
            # ids start at 1 again, as after RESTART IDENTITY
            conn.execute(text("SELECT setval(format('%I.%I', schemaname, sequencename), 1, false) "
                              "FROM pg_sequences WHERE schemaname = current_schema() "
                              "AND last_value IS NOT NULL"))
        else:
            for t in reversed(tables):
                conn.execute(text(f'DELETE FROM "{t}"'))


@pytest.fixture(autouse=True)
def _clean_db(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("nodb"):
        yield
        return
    _truncate_all()
    yield


@pytest.fixture
def db():
    from service.core.db import get_sessionmaker

    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    finally:
        session.close()


@pytest.fixture(scope="session")
def app():
    from service.main import create_app

    return create_app()


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://testserver") as c:
        yield c


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test has its own node id. Under pytest 9.2 the operations' tests of Schemathesis
    (4.x) are named ``test_x[GET /path]`` but all get the node id ``test_x`` (pytest builds it from
    the original name and a parametrization they do not have): pytest-xdist schedules and reports
    by node id, so 143 operations ran as one. The name is the unique part: it becomes the id."""
    seen: dict[str, int] = {}
    for item in items:
        seen[item.nodeid] = seen.get(item.nodeid, 0) + 1
    for item in items:
        if seen[item.nodeid] > 1 and "[" in item.name and not item.nodeid.endswith("]"):
            unique = f"{item.nodeid.rsplit('::', 1)[0]}::{item.name}"
            if hasattr(item, "_id"):  # pytest >= 9.2: a structured id
                item._id = type(item._id).parse(unique)
            else:
                item._nodeid = unique
    ids = [item.nodeid for item in items]
    if len(set(ids)) != len(ids):
        raise pytest.UsageError("two tests have the same node id: pytest-xdist would run one")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "nodb: test does not touch the database")
    config.addinivalue_line("markers", "worker: starts a real Celery worker against Redis")
