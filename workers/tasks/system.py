from __future__ import annotations

import os
import socket

from celery import shared_task
from sqlalchemy import text

from service.core.db import session_scope


@shared_task(name="system.ping")
def ping(payload: str = "pong") -> dict:
    """Round trip through the broker and the database; returns who answered."""
    with session_scope() as db:
        one = db.execute(text("SELECT 1")).scalar_one()
    return {"payload": payload, "db": one, "host": socket.gethostname(), "pid": os.getpid()}
