"""job kit: one set of lifecycle columns on every job table

Every job row (generation, training, evaluation, dataset build and export, import, bulk change,
document parse) gets the columns of ``service.models.job.JobMixin`` it lacked: ``attempts``,
``lease_token`` (the runner's fencing token), ``worker``, ``queue``, ``cancel_requested``, ``started_at``,
``finished_at``, ``heartbeat_at`` and ``sent_at``. Existing rows count as sent
(``sent_at = created_at``).

Revision ID: 20261201_0007
Revises: 20261129_0006
Create Date: 2026-12-01 22:10:00
"""
import sqlalchemy as sa
from alembic import op

import service.core.db

revision = "20261201_0007"
down_revision = "20261129_0006"
branch_labels = None
depends_on = None

_ALL = ("attempts", "lease_token", "worker", "queue", "cancel_requested", "started_at", "finished_at",
        "heartbeat_at", "sent_at")
# the columns each table lacked before this revision
_MISSING: dict[str, tuple[str, ...]] = {
    "generation_jobs": ("attempts", "lease_token", "worker", "queue", "cancel_requested"),
    "training_jobs": ("lease_token", "queue"),
    "eval_runs": ("lease_token", "worker", "queue", "started_at"),
    "dataset_versions": _ALL,
    "dataset_exports": _ALL,
    "import_jobs": tuple(c for c in _ALL if c != "finished_at"),
    "bulk_jobs": tuple(c for c in _ALL if c not in ("started_at", "finished_at")),
    "documents": _ALL,
}


def _column(name: str) -> sa.Column:
    if name == "attempts":
        return sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0"))
    if name == "cancel_requested":
        return sa.Column(name, sa.Boolean(), nullable=False, server_default=sa.false())
    if name == "lease_token":
        return sa.Column(name, sa.String(length=36), nullable=True)
    if name == "worker":
        return sa.Column(name, sa.String(length=200), nullable=True)
    if name == "queue":
        return sa.Column(name, sa.String(length=20), nullable=True)
    return sa.Column(name, service.core.db.UTCDateTime(timezone=True), nullable=True)


def upgrade() -> None:
    for table, columns in _MISSING.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in columns:
                batch_op.add_column(_column(name))
        if "sent_at" in columns:
            op.execute(sa.text(f"UPDATE {table} SET sent_at = created_at"))
        defaults = [c for c in columns if c in ("attempts", "cancel_requested")]
        if defaults:
            with op.batch_alter_table(table, schema=None) as batch_op:
                for name in defaults:
                    batch_op.alter_column(name, server_default=None,
                                          existing_type=_column(name).type, existing_nullable=False)


def downgrade() -> None:
    for table, columns in reversed(list(_MISSING.items())):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for name in reversed(columns):
                batch_op.drop_column(name)
