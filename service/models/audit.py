"""The audit log of security events: logins, failures, tokens, roles, providers, exports."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, JSONType, UTCDateTime, utcnow


class AuditEvent(Base):
    """One security event. Rows are only ever added; ``details`` never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_event_at", "event", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"),
                                                 index=True)
    actor_email: Mapped[str] = mapped_column(String(320), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    project_id: Mapped[int | None] = mapped_column(BigId)
    target: Mapped[str] = mapped_column(String(300), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
