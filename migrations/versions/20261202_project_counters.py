"""project_sample_counts: samples per project and status, kept by triggers on ``samples``

The project page and the review progress read these few rows instead of a ``GROUP BY`` over
every sample of the project (seconds at 5M samples). Triggers, not a call in each writer: the
ORM's writes, bulk ``UPDATE``s, an import's or a loader's ``COPY`` and a deleted project's
cascade all change ``samples``, and a trigger sees every one of them.

* PostgreSQL: one statement-level trigger function for INSERT, UPDATE and DELETE, with
  transition tables, so a bulk statement or a ``COPY`` of a million rows adds one aggregate per
  (project, status) rather than a row of work per sample. Each transaction writes to slot
  ``txid % 64`` of a status, so concurrent decisions seldom wait on one counter row; a count is
  the sum of its slots. Rows are locked in (project, status) order (no deadlock between two
  statements). A cascade from a deleted project adds nothing (the project is gone and its
  counter rows go with it); TRUNCATE of ``samples`` empties the counters.
* SQLite (one writer at a time): row triggers on slot 0.

Created in the same transaction as the backfill: CREATE TRIGGER locks out writers to
``samples`` until the migration commits, so no write falls between the two.

Revision ID: 0019_project_counters
Revises: 0018_search_bigrams
Create Date: 2026-12-02 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_project_counters"
down_revision = "0018_search_bigrams"
branch_labels = None
depends_on = None

SLOTS = 64
UPSERT = (
    "ON CONFLICT (project_id, status, slot) DO UPDATE SET n = project_sample_counts.n + EXCLUDED.n"
)

PG_FUNCTION = f"""
CREATE FUNCTION annotune_count_samples() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    k integer := (txid_current() % {SLOTS})::integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO project_sample_counts (project_id, status, slot, n)
        SELECT project_id, status, k, count(*) FROM new_rows
        GROUP BY project_id, status ORDER BY project_id, status
        {UPSERT};
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO project_sample_counts (project_id, status, slot, n)
        SELECT o.project_id, o.status, k, -count(*) FROM old_rows o
        WHERE EXISTS (SELECT 1 FROM projects p WHERE p.id = o.project_id)
        GROUP BY o.project_id, o.status ORDER BY o.project_id, o.status
        {UPSERT};
    ELSE
        INSERT INTO project_sample_counts (project_id, status, slot, n)
        SELECT project_id, status, k, sum(d) FROM (
            SELECT project_id, status, -1 AS d FROM old_rows
            UNION ALL SELECT project_id, status, 1 AS d FROM new_rows) AS x
        GROUP BY project_id, status HAVING sum(d) <> 0 ORDER BY project_id, status
        {UPSERT};
    END IF;
    RETURN NULL;
END
$$
"""
PG_TRUNCATE_FUNCTION = """
CREATE FUNCTION annotune_count_samples_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM project_sample_counts;
    RETURN NULL;
END
$$
"""
PG_TRIGGERS = [
    (
        "CREATE TRIGGER samples_count_insert AFTER INSERT ON samples REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION annotune_count_samples()"
    ),
    (
        "CREATE TRIGGER samples_count_update AFTER UPDATE ON samples "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION annotune_count_samples()"
    ),
    (
        "CREATE TRIGGER samples_count_delete AFTER DELETE ON samples REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION annotune_count_samples()"
    ),
    (
        "CREATE TRIGGER samples_count_truncate AFTER TRUNCATE ON samples "
        "FOR EACH STATEMENT EXECUTE FUNCTION annotune_count_samples_truncate()"
    ),
]
PG_DROP = [
    *(
        f"DROP TRIGGER IF EXISTS samples_count_{kind} ON samples"
        for kind in ("insert", "update", "delete", "truncate")
    ),
    "DROP FUNCTION IF EXISTS annotune_count_samples()",
    "DROP FUNCTION IF EXISTS annotune_count_samples_truncate()",
]

SQLITE_ADD = (
    "INSERT INTO project_sample_counts (project_id, status, slot, n) "
    "VALUES (NEW.project_id, NEW.status, 0, 1) "
    "ON CONFLICT (project_id, status, slot) DO UPDATE SET n = n + 1;"
)
SQLITE_REMOVE = (
    "UPDATE project_sample_counts SET n = n - 1 "
    "WHERE project_id = OLD.project_id AND status = OLD.status AND slot = 0;"
)
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER samples_count_insert AFTER INSERT ON samples BEGIN {SQLITE_ADD} END",
    f"CREATE TRIGGER samples_count_delete AFTER DELETE ON samples BEGIN {SQLITE_REMOVE} END",
    (
        "CREATE TRIGGER samples_count_update AFTER UPDATE OF status, project_id ON samples "
        "WHEN OLD.status IS NOT NEW.status OR OLD.project_id IS NOT NEW.project_id "
        f"BEGIN {SQLITE_REMOVE} {SQLITE_ADD} END"
    ),
]
SQLITE_DROP = [
    f"DROP TRIGGER IF EXISTS samples_count_{kind}" for kind in ("insert", "update", "delete")
]

BACKFILL = (
    "INSERT INTO project_sample_counts (project_id, status, slot, n) "
    "SELECT project_id, status, 0, count(*) FROM samples GROUP BY project_id, status"
)


def upgrade() -> None:
    op.create_table(
        "project_sample_counts",
        sa.Column(
            "project_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            ondelete="CASCADE",
            name=op.f("fk_project_sample_counts_project_id_projects"),
        ),
        sa.PrimaryKeyConstraint(
            "project_id", "status", "slot", name=op.f("pk_project_sample_counts")
        ),
    )
    if op.get_bind().dialect.name == "postgresql":
        statements = [PG_FUNCTION, PG_TRUNCATE_FUNCTION, *PG_TRIGGERS]
    else:
        statements = SQLITE_TRIGGERS
    for statement in [*statements, BACKFILL]:
        op.execute(sa.text(statement))


def downgrade() -> None:
    for statement in PG_DROP if op.get_bind().dialect.name == "postgresql" else SQLITE_DROP:
        op.execute(sa.text(statement))
    op.drop_table("project_sample_counts")
