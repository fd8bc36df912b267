"""parse progress: how far a document's parse has got, so its page shows a bar with an ETA
* ``documents``: ``progress_total`` (pages of a PDF, sections of another format, set once the
  parser knows) and ``progress_done`` (of those, how many are parsed; written every few pages).

Revision ID: 0017_parse_progress
Revises: 0016_domain_tree
Create Date: 2026-12-02 07:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_parse_progress"
down_revision = "0016_domain_tree"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("progress_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("progress_done", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("progress_done")
        batch.drop_column("progress_total")
