"""text search index: phrases answered by the trigram index itself (PostgreSQL)

``ix_samples_search_text`` is rebuilt on ``translate(search_text, ' ', 'ǂ')`` (``search.JOIN``)
instead of the plain column: pg_trgm splits text into words at every non-letter, so on the plain
column a phrase's trigrams were only its words' trigrams, and a phrase of two common words read
every sample that held both (bench/search.py: ``model data`` at 1M samples). With spaces as a
letter the trigrams straddling them are indexed too. ``service/samples/search.py`` queries the
same expression. SQLite (FTS5 trigram over the whole text) is unchanged.

Revision ID: 0015_search_index
Revises: 0014_pref_leases
Create Date: 2026-12-02 02:40:00
"""
import sqlalchemy as sa
from alembic import op

from service.samples import search

revision = "0015_search_index"
down_revision = "0014_pref_leases"
branch_labels = None
depends_on = None

_PLAIN = f"CREATE INDEX {search.PG_INDEX} ON samples USING gin (search_text gin_trgm_ops)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text(f"DROP INDEX IF EXISTS {search.PG_INDEX}"))
    op.execute(sa.text(search.PG_INDEX_DDL))
    op.execute(sa.text(search.PG_INDEX_STATISTICS))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text(f"DROP INDEX IF EXISTS {search.PG_INDEX}"))
    op.execute(sa.text(_PLAIN))
