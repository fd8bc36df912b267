"""coverage and diversity: the project's domain tree (``domain_nodes``), genre–audience pairs per
document (``ga_pairs``), the diversity domain's jobs (``diversity_jobs``), a sample's leaf
(``samples.domain_leaf_id``) and a generation unit's pair (``generation_units.ga_pair_id``)

Both new columns are plain (no foreign key), added with ``ALTER TABLE ... ADD COLUMN``: on
SQLite a batch rebuild of ``samples`` would drop its text-search triggers.

Revision ID: 0016_domain_tree
Revises: 0015_search_index
Create Date: 2026-12-02 02:30:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import service.core.db

revision = "0016_domain_tree"
down_revision = "0015_search_index"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_TIME = service.core.db.UTCDateTime(timezone=True)


def _lifecycle() -> list[sa.Column]:
    return [sa.Column("status", sa.String(length=20), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("lease_token", sa.String(length=36), nullable=True),
            sa.Column("worker", sa.String(length=200), nullable=True),
            sa.Column("queue", sa.String(length=20), nullable=True),
            sa.Column("cancel_requested", sa.Boolean(), nullable=False),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("started_at", _TIME, nullable=True),
            sa.Column("finished_at", _TIME, nullable=True),
            sa.Column("heartbeat_at", _TIME, nullable=True),
            sa.Column("sent_at", _TIME, nullable=True)]


def upgrade() -> None:
    op.create_table(
        "domain_nodes",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("parent_id", _ID, nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["parent_id"], ["domain_nodes.id"],
                                name=op.f("fk_domain_nodes_parent_id_domain_nodes"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_domain_nodes_project_id_projects"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domain_nodes")))
    op.create_index("ix_domain_nodes_project_id_parent_id", "domain_nodes",
                    ["project_id", "parent_id"], unique=False)
    op.create_table(
        "ga_pairs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("document_id", _ID, nullable=False),
        sa.Column("genre", sa.String(length=200), nullable=False),
        sa.Column("audience", sa.String(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"],
                                name=op.f("fk_ga_pairs_document_id_documents"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_ga_pairs_project_id_projects"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ga_pairs")))
    op.create_index(op.f("ix_ga_pairs_project_id"), "ga_pairs", ["project_id"], unique=False)
    op.create_index(op.f("ix_ga_pairs_document_id"), "ga_pairs", ["document_id"], unique=False)
    op.create_table(
        "diversity_jobs",
        sa.Column("id", _ID, nullable=False),
        sa.Column("project_id", _ID, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("provider_id", _ID, nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("created_by_id", _ID, nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        *_lifecycle(),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"],
                                name=op.f("fk_diversity_jobs_created_by_id_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_diversity_jobs_project_id_projects"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["provider_id"], ["llm_providers.id"],
                                name=op.f("fk_diversity_jobs_provider_id_llm_providers"),
                                ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_diversity_jobs")))
    op.create_index(op.f("ix_diversity_jobs_project_id"), "diversity_jobs", ["project_id"],
                    unique=False)
    op.add_column("samples", sa.Column("domain_leaf_id", _ID, nullable=True))
    op.create_index("ix_samples_project_id_domain_leaf_id", "samples",
                    ["project_id", "domain_leaf_id"], unique=False)
    op.add_column("generation_units", sa.Column("ga_pair_id", _ID, nullable=True))


def downgrade() -> None:
    op.drop_index("ix_samples_project_id_domain_leaf_id", table_name="samples")
    op.drop_column("generation_units", "ga_pair_id")
    op.drop_column("samples", "domain_leaf_id")
    op.drop_index(op.f("ix_diversity_jobs_project_id"), table_name="diversity_jobs")
    op.drop_table("diversity_jobs")
    op.drop_index(op.f("ix_ga_pairs_document_id"), table_name="ga_pairs")
    op.drop_index(op.f("ix_ga_pairs_project_id"), table_name="ga_pairs")
    op.drop_table("ga_pairs")
    op.drop_index("ix_domain_nodes_project_id_parent_id", table_name="domain_nodes")
    op.drop_table("domain_nodes")
