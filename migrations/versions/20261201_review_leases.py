"""review leases: "next" reserves a pending sample for a short while, so annotators sharing a
queue without assignment get different samples

Revision ID: 20261201_0010_review_leases
Revises: 20261201_0009_invitations
Create Date: 2026-12-01 22:00:00
"""
import sqlalchemy as sa
from alembic import op

import service.core.db

revision = "20261201_0010_review_leases"
down_revision = "20261201_0009_invitations"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "review_leases",
        sa.Column("sample_id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("expires_at", service.core.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["samples.id"],
                                name=op.f("fk_review_leases_sample_id_samples"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_review_leases_project_id_projects"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_review_leases_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sample_id", name=op.f("pk_review_leases")),
    )
    with op.batch_alter_table("review_leases") as batch:
        batch.create_index("ix_review_leases_project_id_expires_at", ["project_id", "expires_at"])
        batch.create_index(batch.f("ix_review_leases_user_id"), ["user_id"])


def downgrade() -> None:
    op.drop_table("review_leases")
