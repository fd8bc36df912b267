"""sample text search and generation usage: ``samples.search_text`` (the folded text of the
messages) indexed by pg_trgm on PostgreSQL and an FTS5 trigram table on SQLite; per-unit request,
retry and repair counts and a failure reason; job repair and request counters

* ``samples.search_text``: filled here for every existing sample (``search.search_text``), then
  written with the messages by ``service/samples/store.py``;
* PostgreSQL: ``CREATE EXTENSION pg_trgm`` (a trusted extension: the database owner may) and the
  GIN index ``ix_samples_search_text (search_text gin_trgm_ops)``;
* SQLite: ``samples_fts`` (FTS5, ``tokenize='trigram'``, external content ``samples``) and the
  triggers that keep it in step; a later batch-mode rebuild of ``samples`` drops the triggers
  and must create them again (``search.SQLITE_DDL``, then ``search.SQLITE_REBUILD``);
* ``generation_units``: ``requests``, ``retries``, ``repairs``, ``error_code``;
  ``generation_jobs``: ``repairs``, ``requests``.

Revision ID: 20261201_0013_search_usage
Revises: 20261201_0012_provider_job
Create Date: 2026-12-01 23:30:00
"""
import json

import sqlalchemy as sa
from alembic import op

from service.samples import search

revision = "20261201_0013_search_usage"
down_revision = "20261201_0012_provider_job"
branch_labels = None
depends_on = None

BATCH = 2000
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _backfill(bind) -> None:
    last = 0
    while True:
        rows = bind.execute(sa.text("SELECT id, messages FROM samples WHERE id > :last "
                                    "ORDER BY id LIMIT :n"), {"last": last, "n": BATCH}).all()
        if not rows:
            return
        values = []
        for sid, messages in rows:
            if isinstance(messages, str | bytes):
                messages = json.loads(messages)
            values.append({"sid": sid, "text": search.search_text(messages)})
        bind.execute(sa.text("UPDATE samples SET search_text = :text WHERE id = :sid"), values)
        last = rows[-1][0]


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=False, server_default=""))
    _backfill(bind)
    if bind.dialect.name == "postgresql":
        for statement in search.PG_DDL:
            op.execute(sa.text(statement))
    else:
        for statement in search.SQLITE_DDL:
            op.execute(sa.text(statement))
        op.execute(sa.text(search.SQLITE_REBUILD))
    for table, columns in (("generation_units", ("requests", "retries", "repairs")),
                           ("generation_jobs", ("repairs", "requests"))):
        with op.batch_alter_table(table) as batch:
            for name in columns:
                kind = _ID if table == "generation_jobs" and name == "requests" else sa.Integer()
                batch.add_column(sa.Column(name, kind, nullable=False,
                                           server_default=sa.text("0")))
            if table == "generation_units":
                batch.add_column(sa.Column("error_code", sa.String(length=40), nullable=True))
        with op.batch_alter_table(table) as batch:
            for name in columns:
                kind = _ID if table == "generation_jobs" and name == "requests" else sa.Integer()
                batch.alter_column(name, server_default=None, existing_type=kind,
                                   existing_nullable=False)
    # units that failed before: a reason the summary can count
    op.execute(sa.text("UPDATE generation_units SET error_code = 'error' "
                       "WHERE status = 'failed' AND error_code IS NULL"))


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("generation_jobs") as batch:
        batch.drop_column("requests")
        batch.drop_column("repairs")
    with op.batch_alter_table("generation_units") as batch:
        batch.drop_column("error_code")
        batch.drop_column("repairs")
        batch.drop_column("retries")
        batch.drop_column("requests")
    if bind.dialect.name == "postgresql":
        op.execute(sa.text(f"DROP INDEX IF EXISTS {search.PG_INDEX}"))
    else:
        for statement in search.SQLITE_DROP:
            op.execute(sa.text(statement))
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("search_text")
