"""Every foreign key of a table that grows with the data leads an index, so a delete of the rows it
refers to (a project, a document, a version) finds the referring rows by index instead of
scanning the table once per deleted row (migration 0021)."""
from __future__ import annotations

from sqlalchemy import inspect

from service.core.db import get_engine

# tables with a row per sample, chunk, item or event: thousands to millions of rows
GROWING = {
    "samples", "sample_revisions", "chunks", "dataset_version_items", "generation_units",
    "preference_items", "preference_candidates", "preference_decisions",
    "preference_version_items", "preference_eval_items", "eval_predictions", "review_decisions",
    "review_leases", "preference_leases", "job_events", "audit_events",
}
# users are deactivated, not deleted, in normal use: a user's rows need no index for that
EXEMPT_TARGETS = {"users"}


def test_every_growing_tables_foreign_key_leads_an_index():
    insp = inspect(get_engine())
    tables = set(insp.get_table_names())
    assert GROWING <= tables, GROWING - tables
    missing = []
    for table in sorted(GROWING):
        leading = {tuple(ix["column_names"][:1]) for ix in insp.get_indexes(table)}
        leading |= {tuple(u["column_names"][:1]) for u in insp.get_unique_constraints(table)}
        leading.add(tuple(insp.get_pk_constraint(table)["constrained_columns"][:1]))
        for fk in insp.get_foreign_keys(table):
            if fk["referred_table"] in EXEMPT_TARGETS:
                continue
            if tuple(fk["constrained_columns"][:1]) not in leading:
                missing.append(f"{table}.{fk['constrained_columns'][0]} -> {fk['referred_table']}")
    assert missing == []
