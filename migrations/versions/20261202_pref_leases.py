"""preference leases, evaluations and judge pre-ranking

* ``preference_leases``: ``next`` reserves a comparison item for the annotator it hands it to,
  so two annotators sharing the pairwise queue never get the same pair at once (as
  ``review_leases`` do for samples);
* ``preference_eval_runs`` / ``preference_eval_items``: reward accuracy and judged win rate on a
  preference version's held-out split;
* ``preference_items.judge``: an LLM judge's pre-ranking of the item's pair.

Revision ID: 0014_pref_leases
Revises: 20261202_0014_job_progress
Create Date: 2026-12-02 02:10:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import service.core.db

revision = "0014_pref_leases"
down_revision = "20261202_0014_job_progress"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TS = service.core.db.UTCDateTime(timezone=True)


def _job_columns() -> list[sa.Column]:
    return [sa.Column("status", sa.String(length=20), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("lease_token", sa.String(length=36), nullable=True),
            sa.Column("worker", sa.String(length=200), nullable=True),
            sa.Column("queue", sa.String(length=20), nullable=True),
            sa.Column("cancel_requested", sa.Boolean(), nullable=False),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("started_at", _TS, nullable=True),
            sa.Column("finished_at", _TS, nullable=True),
            sa.Column("heartbeat_at", _TS, nullable=True),
            sa.Column("sent_at", _TS, nullable=True)]


def upgrade() -> None:
    op.create_table(
        "preference_leases",
        sa.Column("item_id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("user_id", _ID, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["preference_items.id"],
                                name=op.f("fk_preference_leases_item_id_preference_items"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_preference_leases_project_id_projects"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_preference_leases_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_preference_leases")),
    )
    with op.batch_alter_table("preference_leases") as batch:
        batch.create_index("ix_preference_leases_project_id_expires_at", ["project_id", "expires_at"])
        batch.create_index(batch.f("ix_preference_leases_user_id"), ["user_id"])

    op.create_table(
        "preference_eval_runs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("preference_version_id", _ID, nullable=False),
        sa.Column("split", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("models", _JSON, nullable=False),
        sa.Column("training_job_id", _ID, nullable=True),
        sa.Column("judge_provider_id", _ID, nullable=True),
        sa.Column("settings", _JSON, nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("aggregate", _JSON, nullable=False),
        sa.Column("created_by_id", _ID, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        *_job_columns(),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"],
                                name=op.f("fk_preference_eval_runs_created_by_id_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["judge_provider_id"], ["llm_providers.id"],
                                name=op.f("fk_preference_eval_runs_judge_provider_id_llm_providers"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(
            ["preference_version_id"], ["preference_versions.id"],
            name=op.f("fk_preference_eval_runs_preference_version_id_preference_versions"),
            ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_preference_eval_runs_project_id_projects"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["training_job_id"], ["training_jobs.id"],
                                name=op.f("fk_preference_eval_runs_training_job_id_training_jobs"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preference_eval_runs")),
    )
    with op.batch_alter_table("preference_eval_runs") as batch:
        batch.create_index(batch.f("ix_preference_eval_runs_project_id"), ["project_id"])
        batch.create_index(batch.f("ix_preference_eval_runs_training_job_id"), ["training_job_id"])

    op.create_table(
        "preference_eval_items",
        sa.Column("id", _ID, nullable=False),
        sa.Column("run_id", _ID, nullable=False),
        sa.Column("item_id", _ID, nullable=False),
        sa.Column("outputs", _JSON, nullable=False),
        sa.Column("scores", _JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["preference_version_items.id"],
            name=op.f("fk_preference_eval_items_item_id_preference_version_items"),
            ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["preference_eval_runs.id"],
                                name=op.f("fk_preference_eval_items_run_id_preference_eval_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preference_eval_items")),
        sa.UniqueConstraint("run_id", "item_id",
                            name=op.f("uq_preference_eval_items_run_id_item_id")),
    )
    with op.batch_alter_table("preference_eval_items") as batch:
        batch.create_index(batch.f("ix_preference_eval_items_run_id"), ["run_id"])

    with op.batch_alter_table("preference_items") as batch:
        batch.add_column(sa.Column("judge", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("preference_items") as batch:
        batch.drop_column("judge")
    op.drop_table("preference_eval_items")
    op.drop_table("preference_eval_runs")
    op.drop_table("preference_leases")
