"""Alembic environment: one linear history for PostgreSQL and SQLite (batch mode on SQLite)."""
from __future__ import annotations

from alembic import context

import service.models  # noqa: F401  (register every table)
from service.core.config import get_settings
from service.core.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def include_name(name, type_, parent_names) -> bool:
    """Objects the models do not declare but a revision made on purpose (the samples text
    search index: ``service/samples/search.py``) are not autogenerate's to drop."""
    from service.samples.search import is_search_object

    return not is_search_object(name)


def _url() -> str:
    return config.attributes.get("database_url") or get_settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table as copy + DROP + rename; with foreign keys enforced, that DROP
        # deletes the child rows of every ON DELETE CASCADE key (dropping dataset_versions would
        # empty dataset_version_items). Enforcement is switched off for the migration (the pragma
        # only works outside a transaction) and the keys are checked once it is done.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=sqlite, compare_type=True, include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()
    if sqlite:
        if connection.in_transaction():
            connection.commit()
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
        if broken:
            raise RuntimeError(f"foreign keys broken after the migration: {broken[:10]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
