from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from service.core import migrate
from service.core.db import Base
import service.models  # noqa: F401

PG_URL = os.environ.get("ANNOTUNE_TEST_DATABASE_URL", "")


def _roundtrip(url: str) -> None:
    migrate.upgrade(url)
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    migrate.downgrade(url, "base")
    left = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert left == set()
    migrate.upgrade(url)
    engine.dispose()


@pytest.mark.nodb
@pytest.mark.skipif(not PG_URL, reason="needs ANNOTUNE_TEST_DATABASE_URL (PostgreSQL)")
def test_upgrade_downgrade_postgresql():
    base = make_url(PG_URL)
    name = f"annotune_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        _roundtrip(base.set(database=name).render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.nodb
def test_upgrade_downgrade_sqlite(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.nodb
def test_models_match_migrations(tmp_path):
    """Autogenerate finds nothing to do: every model change has its Alembic revision."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
