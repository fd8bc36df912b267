"""indexes on the foreign keys that deletes check: no sequential scan per deleted row

Deleting a row checks (or cascades to) every row that refers to it; PostgreSQL finds them with
an index on the referring column or else scans the referring table, once per deleted row.
These referring columns had no index that leads with them, so deleting a project of 60,000
samples with a version built from them scanned ``dataset_version_items`` 60,000 times for the
sample and again for its revision (157 s in a test's cleanup; hours at 1M), and deleting a
document scanned ``samples`` and ``generation_units`` per chunk. SQLite gets the same indexes
(its foreign-key checks search the same way).

Revision ID: 0021_fk_indexes
Revises: 0020_search_phrases
Create Date: 2026-12-02 18:30:00
"""

from alembic import op

revision = "0021_fk_indexes"
down_revision = "0020_search_phrases"
branch_labels = None
depends_on = None

# (table, column): each gets ix_<table>_<column>, as the models' index=True names it
COLUMNS = [
    ("dataset_version_items", "sample_id"),
    ("dataset_version_items", "revision_id"),
    ("generation_units", "chunk_id"),
    ("generation_units", "sample_id"),
    ("preference_items", "chunk_id"),
    ("preference_items", "document_id"),
    ("preference_items", "sample_id"),
    ("preference_version_items", "item_id"),
    ("preference_eval_items", "item_id"),
    ("eval_predictions", "item_id"),
    ("chunks", "duplicate_of_id"),
    ("samples", "document_id"),
]


def upgrade() -> None:
    for table, column in COLUMNS:
        op.create_index(f"ix_{table}_{column}", table, [column])


def downgrade() -> None:
    for table, column in reversed(COLUMNS):
        op.drop_index(f"ix_{table}_{column}", table_name=table)
