"""The audit log: security events (logins, failures, tokens, roles, providers, exports).

``record`` adds a row in the caller's transaction. Events that must survive the request's
rollback (a refused login) are recorded by the caller after its own commit. The client address
comes from ``client_ip``, set once per request by the app's middleware (it is a context variable,
so threads running the request's sync handlers see it too).
"""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.pagination import paginate
from service.models import AuditEvent, User

client_ip: ContextVar[str] = ContextVar("annotune_client_ip", default="")

EVENTS = (
    "login.success", "login.failure", "login.limited", "logout", "password.change",
    "password.reset", "sessions.revoke", "token.create", "token.revoke", "user.create",
    "user.update", "member.add", "member.role", "member.remove", "provider.create",
    "provider.update", "provider.delete", "export.download",
)


def record(db: Session, event: str, *, actor: User | None = None, actor_email: str = "",
           project_id: int | None = None, target: str = "",
           details: dict[str, Any] | None = None, ip: str | None = None) -> AuditEvent:
    """Add one event. ``details`` must never contain a secret (keys, tokens, passwords)."""
    row = AuditEvent(event=event, actor_id=actor.id if actor else None,
                     actor_email=(actor.email if actor else actor_email)[:320],
                     ip=(ip if ip is not None else client_ip.get())[:64], project_id=project_id,
                     target=target[:300], details=details or {})
    db.add(row)
    db.flush()
    return row


def list_events(db: Session, *, limit: int, cursor: str | None, event: str | None = None,
                actor_id: int | None = None) -> tuple[list[AuditEvent], str | None]:
    stmt = select(AuditEvent)
    if event:
        stmt = stmt.where(AuditEvent.event.startswith(event) if event.endswith(".")
                          else AuditEvent.event == event)
    if actor_id is not None:
        stmt = stmt.where(AuditEvent.actor_id == actor_id)
    return paginate(db, stmt, AuditEvent.id, limit=limit, cursor=cursor, descending=True)
