"""text search: a trigram index for phrases (PostgreSQL)

``ix_samples_search_phrase`` indexes ``replace(search_text, ' ', 'ǂ')`` (``search.JOIN``):
pg_trgm splits text into words at every non-letter, so on the plain column a phrase's trigrams
were only its words' trigrams, and a phrase of two common words read every sample that held both
(bench/search.py: ``model data`` at 1M samples). With spaces as a letter the trigrams straddling
them are indexed too. ``service/samples/search.py`` queries that expression for a query with a
space, and the plain column (``ix_samples_search_text``, 0013) for one without. SQLite (FTS5
trigram over the whole text) is unchanged.

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


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in search.PG_PHRASE_DDL:
        op.execute(sa.text(statement))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(sa.text(f"DROP INDEX IF EXISTS {search.PG_PHRASE_INDEX}"))
