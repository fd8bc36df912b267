"""job delivery (sent_at), eval run attempts and cancel, GIN index on sample tags

* ``generation_jobs.sent_at``, ``training_jobs.sent_at``, ``eval_runs.sent_at``: when the broker
  accepted the job's message; NULL means never (broker down at commit time), so workers re-send
  exactly those, periodically, without flooding a busy queue with duplicates.
* ``eval_runs.attempts`` (retry cap) and ``eval_runs.cancel_requested``.
* ``ix_samples_tags``: GIN ``jsonb_path_ops`` on PostgreSQL for ``tags @> '["x"]'``.

Existing queued jobs get ``sent_at = created_at`` (they were sent, or re-sent at worker start).

Revision ID: 20261129_0004
Revises: 20261129_0003
Create Date: 2026-11-29 16:05:00
"""
import sqlalchemy as sa
from alembic import op

import service.core.db

revision = "20261129_0004"
down_revision = "20261129_0003"
branch_labels = None
depends_on = None

_JOB_TABLES = ("generation_jobs", "training_jobs", "eval_runs")


def upgrade() -> None:
    for table in _JOB_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("sent_at", service.core.db.UTCDateTime(timezone=True),
                                          nullable=True))
        op.execute(sa.text(f"UPDATE {table} SET sent_at = created_at"))
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False,
                                      server_default=sa.text("0")))
        batch_op.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.alter_column("attempts", server_default=None, existing_type=sa.Integer(),
                              existing_nullable=False)
        batch_op.alter_column("cancel_requested", server_default=None, existing_type=sa.Boolean(),
                              existing_nullable=False)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index("ix_samples_tags", "samples", ["tags"], unique=False,
                        postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"})
    else:
        op.create_index("ix_samples_tags", "samples", ["tags"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_samples_tags", table_name="samples")
    with op.batch_alter_table("eval_runs", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested")
        batch_op.drop_column("attempts")
    for table in reversed(_JOB_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("sent_at")
