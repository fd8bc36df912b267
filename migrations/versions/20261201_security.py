"""security: token expiry, atomic rate counters (replacing login_attempts), the audit log

* ``api_tokens.expires_at``: a token stops working after it (NULL: never expires).
* ``rate_counters``: fixed-window counters, one row per key, incremented with a single
  ``UPDATE ... RETURNING`` (a row lock), so concurrent failed logins are all counted.
  ``login_attempts`` (a row per attempt, counted with a racy ``SELECT count``) is dropped.
* ``audit_events``: security events for admins.

Revision ID: 20261201_0008
Revises: 20261201_0007
Create Date: 2026-12-01 10:00:00
"""
import sqlalchemy as sa
from alembic import op

import service.core.db

revision = "20261201_0008"
down_revision = "20261201_0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", service.core.db.UTCDateTime(timezone=True),
                                      nullable=True))

    op.create_table(
        "rate_counters",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("window_start", service.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_counters")),
    )
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_login_attempts_key_at")
    op.drop_table("login_attempts")

    op.create_table(
        "audit_events",
        sa.Column("id", _ID, nullable=False),
        sa.Column("at", service.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("actor_id", _ID, nullable=True),
        sa.Column("actor_email", sa.String(length=320), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("project_id", _ID, nullable=True),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("details", _JSON, nullable=False),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"],
                                name=op.f("fk_audit_events_actor_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_actor_id"), ["actor_id"], unique=False)
        batch_op.create_index("ix_audit_events_event_at", ["event", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_event_at")
        batch_op.drop_index(batch_op.f("ix_audit_events_actor_id"))
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))
    op.drop_table("audit_events")

    op.create_table(
        "login_attempts",
        sa.Column("id", _ID, nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("at", service.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    with op.batch_alter_table("login_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_login_attempts_key_at", ["key", "at"], unique=False)
    op.drop_table("rate_counters")

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
