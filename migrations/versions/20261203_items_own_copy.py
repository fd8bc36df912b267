"""dataset_version_items: no foreign keys to samples and revisions (a version is its own copy)

An item holds the frozen copy of its sample (messages, hash, version, revision id); nothing
reads the sample through it. The two foreign keys made PostgreSQL check and lock (``FOR KEY
SHARE``) the sample and the revision of every item inserted, one query each, queued to the end
of the build's COPY: 11-17 s of a 900,000-sample build on one core, after the rows were
written (docs/benchmarks.md, Export). Their indexes (0021) served only the checks of a delete.
Samples are deleted only with their project, which deletes its versions too; a version now
keeps its items even if a sample row is removed by hand. The foreign key to the version stays
(its cascade deletes the items).

Revision ID: 0022_items_own_copy
Revises: 0021_fk_indexes
Create Date: 2026-12-03 07:20:00
"""

from alembic import op

revision = "0022_items_own_copy"
down_revision = "0021_fk_indexes"
branch_labels = None
depends_on = None

TABLE = "dataset_version_items"
# (column, referred table, constraint name as the naming convention gives it)
REFERENCES = [
    ("sample_id", "samples", "fk_dataset_version_items_sample_id_samples"),
    ("revision_id", "sample_revisions", "fk_dataset_version_items_revision_id_sample_revisions"),
]


def upgrade() -> None:
    for column, _, _ in REFERENCES:
        op.drop_index(f"ix_{TABLE}_{column}", table_name=TABLE)
    with op.batch_alter_table(TABLE) as batch:  # SQLite: the table is rebuilt without them
        for _, _, name in REFERENCES:
            batch.drop_constraint(name, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        for column, referred, name in REFERENCES:
            batch.create_foreign_key(name, referred, [column], ["id"], ondelete="RESTRICT")
    for column, _, _ in REFERENCES:
        op.create_index(f"ix_{TABLE}_{column}", TABLE, [column])
