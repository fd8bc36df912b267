"""dataset_versions.reasoning: omit a sample's reasoning, or freeze it in <think> before the answer

Revision ID: 20261129_0006
Revises: 20261129_0005
Create Date: 2026-11-29 16:35:00
"""
import sqlalchemy as sa
from alembic import op

revision = "20261129_0006"
down_revision = "20261129_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reasoning", sa.String(length=10), nullable=False,
                                      server_default="omit"))
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.alter_column("reasoning", server_default=None, existing_type=sa.String(length=10),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions", schema=None) as batch_op:
        batch_op.drop_column("reasoning")
