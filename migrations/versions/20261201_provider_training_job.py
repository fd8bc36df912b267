"""provider of a training job: ``llm_providers.training_job_id``

A succeeded training job's fine-tuned model registered as a local provider of its project
(``POST /projects/{id}/training-jobs/{job}/provider``) keeps the job it came from, so the next
round's samples and evaluation runs name the model that drafted them.

Revision ID: 20261201_0012_provider_job
Revises: 20261201_0011_preferences
Create Date: 2026-12-01 23:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = "20261201_0012_provider_job"  # alembic_version holds 32 characters
down_revision = "20261201_0011_preferences"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("llm_providers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("training_job_id", _ID, nullable=True))
        batch_op.create_index(batch_op.f("ix_llm_providers_training_job_id"), ["training_job_id"],
                              unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_llm_providers_training_job_id_training_jobs"),
                                    "training_jobs", ["training_job_id"], ["id"],
                                    ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("llm_providers", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_llm_providers_training_job_id_training_jobs"),
                                 type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_llm_providers_training_job_id"))
        batch_op.drop_column("training_job_id")
