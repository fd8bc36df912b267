"""text search: an index for two-character terms (PostgreSQL and SQLite)

Trigram indexes hold nothing for a two-character term, so ``熔断`` read every sample of the
project (bench/search.py: 0.6-1.2 s at 1M samples). ``service/samples/search.py`` explains the
queries; this adds what they use:

* PostgreSQL: the immutable SQL function ``annotune_cjk_bigrams(text) -> text[]`` (every pair
  of adjacent CJK characters) and the GIN index ``ix_samples_search_bigrams`` on
  ``annotune_cjk_bigrams(search_text)``. No column: building the index computes it for every
  existing row in one statement (the backfill), and PostgreSQL keeps it with each write of
  ``search_text``.
* SQLite: ``samples_fts_vocab`` (an ``fts5vocab`` table over the existing FTS5 trigram index:
  no data of its own, its terms are looked up by range) and the expression index
  ``ix_samples_search_tail`` on ``substr(search_text, -2)`` (built from the existing rows by
  CREATE INDEX).

Revision ID: 0018_search_bigrams
Revises: 0017_parse_progress
Create Date: 2026-12-02 08:00:00
"""
import sqlalchemy as sa
from alembic import op

from service.samples import search

revision = "0018_search_bigrams"
down_revision = "0017_parse_progress"
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in search.PG_BIGRAM_DDL if postgresql else search.SQLITE_PAIR_DDL:
        op.execute(sa.text(statement))


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for statement in search.PG_BIGRAM_DROP if postgresql else search.SQLITE_PAIR_DROP:
        op.execute(sa.text(statement))
