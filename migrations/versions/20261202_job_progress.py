"""job progress counters: what an import has read of its file, and how many of its selected
samples a version build has frozen, so the pages show a bar with an ETA while the job runs

* ``import_jobs``: ``bytes_total`` (the file's size, set when the runner starts) and
  ``bytes_read`` (how far the reader got, written after each batch);
* ``dataset_versions``: ``progress_total`` (samples selected by the filter, after the first
  pass) and ``progress_done`` (of those, how many the build has frozen or refused).

Revision ID: 20261202_0014_job_progress
Revises: 20261201_0013_search_usage
Create Date: 2026-12-02 02:15:00
"""
import sqlalchemy as sa
from alembic import op

revision = "20261202_0014_job_progress"
down_revision = "20261201_0013_search_usage"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(sa.Column("bytes_total", _ID, nullable=True))
        batch.add_column(sa.Column("bytes_read", _ID, nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("progress_total", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("progress_done", sa.Integer(), nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("progress_done")
        batch.drop_column("progress_total")
    with op.batch_alter_table("import_jobs") as batch:
        batch.drop_column("bytes_read")
        batch.drop_column("bytes_total")
