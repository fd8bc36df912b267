"""Every JSON column is written by one serializer (service.core.db.json_dumps), on both dialects."""
from __future__ import annotations

import math

from sqlalchemy import text

from service.models.audit import AuditEvent


def test_non_finite_floats_are_stored_as_null_and_text_as_utf8(db):
    details = {"eval_loss": math.nan, "grad_norm": [1.5, math.inf, -math.inf],
               "term": "软件包", 3: "int key"}
    row = AuditEvent(event="json.check", details=details)
    db.add(row)
    db.commit()  # JSONB refused NaN before: this commit raised DataError on PostgreSQL
    db.expire_all()
    got = db.get(AuditEvent, row.id).details
    assert got == {"eval_loss": None, "grad_norm": [1.5, None, None], "term": "软件包",
                   "3": "int key"}
    stored = db.execute(text("SELECT CAST(details AS TEXT) FROM audit_events WHERE id = :i"),
                        {"i": row.id}).scalar_one()
    assert "软件包" in stored and "\\u" not in stored  # searchable text, not escapes
    assert "NaN" not in stored and "Infinity" not in stored
