"""bulk_jobs table; sample list sort indexes

* ``bulk_jobs``: bulk changes and assignments too large for one request, with their progress
  (updated in the same transaction as each batch of samples).
* ``ix_samples_project_id_updated_at_id`` / ``..._created_at_id``: keyset pagination of the sample
  list and review queue sorted by ``updated_at`` or ``created_at`` (a full scan and sort at 1M
  samples without them).

Revision ID: 20261129_0005
Revises: 20261129_0004
Create Date: 2026-11-29 16:05:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import service.core.db

revision = "20261129_0005"
down_revision = "20261129_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bulk_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("actor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("state", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                  nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", service.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", service.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", service.core.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name=op.f("fk_bulk_jobs_actor_id_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_bulk_jobs_project_id_projects"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_jobs")),
    )
    with op.batch_alter_table("bulk_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bulk_jobs_project_id"), ["project_id"], unique=False)
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.create_index("ix_samples_project_id_updated_at_id",
                              ["project_id", "updated_at", "id"], unique=False)
        batch_op.create_index("ix_samples_project_id_created_at_id",
                              ["project_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index("ix_samples_project_id_created_at_id")
        batch_op.drop_index("ix_samples_project_id_updated_at_id")
    with op.batch_alter_table("bulk_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bulk_jobs_project_id"))
    op.drop_table("bulk_jobs")
