"""text search: a BRIN index on samples.id that bounds a search's page (PostgreSQL)

A search whose matches all lie far down the list (``kubernetes operator``: ~10k samples, all
among the newest 10%, listed oldest first) read every match from the table to find the first
page (bench/search.py). ``service/samples/search.py`` (``pg_page``) now takes the first page's
worth of matches in the table's physical order, bounds the page by their ids, and reads only
the index's candidates in blocks that can hold such an id: this index says which blocks
(block ranges of 32 pages with their smallest and largest id; a few hundred kB at 1M samples;
``autosummarize`` keeps new blocks summarized). SQLite: nothing (its search is FTS5).

Revision ID: 0020_search_phrases
Revises: 0019_project_counters
Create Date: 2026-12-02 15:00:00
"""

import sqlalchemy as sa
from alembic import op

from service.samples import search

revision = "0020_search_phrases"
down_revision = "0019_project_counters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(search.PG_ID_BRIN_DDL))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(search.PG_ID_BRIN_DROP))
