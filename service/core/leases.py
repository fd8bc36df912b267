"""Review leases: one row per item being reviewed (the item's id is the row's key), held by one
user until it expires; shared by the sample review queue and the pairwise review queue."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session


def take(db: Session, lease_model: Any, key: str, *, item_id: int, project_id: int,
         user_id: int, now: datetime, ttl: timedelta) -> bool:
    """Lease item ``item_id`` (column ``key`` of ``lease_model``) to ``user_id`` unless someone
    else holds a live lease on it, in one upsert (two reviewers asking at once: one wins), and
    drop the user's other leases in the project. Whether the lease is now the user's."""
    column = getattr(lease_model, key)
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(lease_model).values({key: item_id, "project_id": project_id,
                                       "user_id": user_id, "expires_at": now + ttl})
    upsert = stmt.on_conflict_do_update(
        index_elements=[column],
        set_={"user_id": stmt.excluded.user_id, "expires_at": stmt.excluded.expires_at},
        where=(lease_model.expires_at <= now) | (lease_model.user_id == user_id),
    ).returning(column)
    if db.execute(upsert).first() is None:
        return False
    db.execute(delete(lease_model).where(lease_model.user_id == user_id,
                                         lease_model.project_id == project_id,
                                         column != item_id))
    return True
