from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

import service.models  # noqa: F401
from service.core import migrate
from service.core.db import Base

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


@contextmanager
def _scratch_postgresql():
    """A new, empty PostgreSQL database next to the test one; dropped afterwards."""
    base = make_url(PG_URL)
    name = f"annotune_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.nodb
@pytest.mark.skipif(not PG_URL, reason="needs ANNOTUNE_TEST_DATABASE_URL (PostgreSQL)")
def test_upgrade_downgrade_postgresql():
    with _scratch_postgresql() as url:
        _roundtrip(url)


@pytest.mark.nodb
def test_upgrade_downgrade_sqlite(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path / 'm.db'}")


def _not_search_object(name, type_, parent_names) -> bool:
    from service.samples.search import is_search_object

    return not is_search_object(name)


@pytest.mark.nodb
def test_models_match_migrations(tmp_path):
    """Autogenerate finds nothing to do: every model change has its Alembic revision."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": _not_search_object})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def _frozen_text_rewritten(url: str) -> None:
    """0003 turns JSONB/JSON frozen messages into canonical orjson text, values unchanged."""
    import orjson
    from sqlalchemy.orm import Session

    from service.models import DatasetVersion, DatasetVersionItem, Sample
    from tests.support import factories

    messages = [{"role": "system", "content": "Sois bref « ok »"},
                {"role": "user", "content": 'a "quoted"\nline 支付'},
                {"role": "assistant", "content": "b\\c \u0007"}]
    migrate.upgrade(url)
    engine = create_engine(url)
    with Session(engine) as db:
        owner = factories.make_user(db)
        project = factories.make_project(db, owner)
        sample = Sample(project_id=project.id, messages=messages, status="accepted", version=1,
                        content_hash="0" * 64, tags=[], scores={}, provenance={})
        db.add(sample)
        db.flush()
        from service.models import Dataset

        ds = Dataset(project_id=project.id, name="d")
        db.add(ds)
        db.flush()
        v = DatasetVersion(dataset_id=ds.id, project_id=project.id, number=1, status="ready")
        db.add(v)
        db.flush()
        db.add(DatasetVersionItem(version_id=v.id, sample_id=sample.id, sample_version=1,
                                  split="train", position=0, messages=messages,
                                  content_hash="0" * 64))
        db.commit()
    engine.dispose()
    migrate.downgrade(url, "20261129_0002")
    engine = create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":  # what SQLAlchemy's JSON type wrote before 0003
            import json

            conn.execute(text("UPDATE dataset_version_items SET messages = :m"),
                         {"m": json.dumps(messages)})
        before = conn.execute(text("SELECT messages FROM dataset_version_items")).scalar_one()
    engine.dispose()
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        after = conn.execute(text("SELECT messages FROM dataset_version_items")).scalar_one()
    engine.dispose()
    assert isinstance(after, str)
    assert after == orjson.dumps(messages).decode()
    assert before != after  # JSONB value (PostgreSQL) or spaced, ASCII-escaped text (SQLite)


@pytest.mark.nodb
def test_frozen_messages_become_canonical_text_sqlite(tmp_path):
    _frozen_text_rewritten(f"sqlite:///{tmp_path / 'f.db'}")


@pytest.mark.nodb
@pytest.mark.skipif(not PG_URL, reason="needs ANNOTUNE_TEST_DATABASE_URL (PostgreSQL)")
def test_frozen_messages_become_canonical_text_postgresql():
    with _scratch_postgresql() as url:
        _frozen_text_rewritten(url)
