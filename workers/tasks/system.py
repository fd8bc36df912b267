"""System tasks, and the sweeper thread every worker runs: the job kit's one sweep
(``workers/jobs.py``) over every declared job kind of the worker's queues."""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from sqlalchemy import text

from service.core.config import get_settings
from service.core.db import session_scope
from workers import jobs as kit


@shared_task(name="system.ping")
def ping(payload: str = "pong") -> dict:
    """Round trip through the broker and the database; returns who answered."""
    with session_scope() as db:
        one = db.execute(text("SELECT 1")).scalar_one()
    return {"payload": payload, "db": one, "host": socket.gethostname(), "pid": os.getpid()}


log = logging.getLogger(__name__)
_stop = threading.Event()


def sweep_interval() -> float:
    """Half the stale time: a dead runner's job is resumed within 1.5x ``job_stale_seconds``."""
    return max(0.5, get_settings().job_stale_seconds / 2)


def _sweeper_loop(queues: set[str], interval: float) -> None:
    try:
        resent = kit.resend_queued(queues)
        if resent:
            log.warning("re-sent queued jobs at worker start: %s", resent)
    except Exception:
        log.exception("re-sending queued jobs failed")
    while not _stop.wait(interval):
        try:  # keep sweeping; a database or broker hiccup must not kill the thread
            result = kit.sweep(queues)
            if result["requeued"]:
                log.warning("stale jobs re-queued or given up: %s", result["requeued"])
            if result["resent"]:
                log.warning("re-sent never-delivered jobs: %s", result["resent"])
        except Exception:
            log.exception("sweeper failed")


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_kwargs: Any) -> None:
    try:  # ``sender`` is the worker's Consumer
        queues = {q.name for q in sender.task_consumer.queues}
    except AttributeError:
        queues = {"ingest", "generate", "gpu"}
    _stop.clear()
    threading.Thread(target=_sweeper_loop, args=(queues, sweep_interval()),
                     name="annotune-sweeper", daemon=True).start()


@worker_shutting_down.connect
def _stop_sweeper(**_kwargs: Any) -> None:
    _stop.set()
