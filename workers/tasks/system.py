"""System tasks, and the sweeper thread every worker runs: it resumes the jobs of its queues
whose worker vanished, and re-sends the queued jobs whose message never reached the broker."""
from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from sqlalchemy import or_, select, text, true, update

from service.core.config import get_settings
from service.core.db import session_scope


@shared_task(name="system.ping")
def ping(payload: str = "pong") -> dict:
    """Round trip through the broker and the database; returns who answered."""
    with session_scope() as db:
        one = db.execute(text("SELECT 1")).scalar_one()
    return {"payload": payload, "db": one, "host": socket.gethostname(), "pid": os.getpid()}


# -- the sweeper: every worker resumes the jobs of its queues whose worker vanished -----------
log = logging.getLogger(__name__)
_stop = threading.Event()

# a queued row whose message never reached the broker is re-sent once it is this old (seconds):
# younger ones may be in the middle of their first send, right after their commit
RESEND_AFTER_SECONDS = 30.0


def sweep_once(queues: set[str]) -> dict:
    out: dict = {}
    if "generate" in queues:
        from service.generation import service as generation_service

        out["generation"] = generation_service.sweep_stale_jobs()["resumed"]
    if "gpu" in queues:
        from service.training import service as training_service

        out["training"] = training_service.sweep_stale_jobs()
    if queues & {"generate", "gpu"}:  # endpoint runs on generate, local-model runs on gpu
        from service.evaluation import service as evaluation_service

        out["evaluation"] = evaluation_service.sweep_stale_runs(queues)
    return out


def _job_kinds(queues: set[str]) -> list[tuple[str, Any, Any, Any, str]]:
    """``(label, model, filter, task name of a row, the task's id argument)`` for the job tables
    this worker serves:
    generation jobs on ``generate``, training jobs on ``gpu``, endpoint eval runs on
    ``generate`` and local-model eval runs on ``gpu``."""
    from service.evaluation import service as evaluation_service
    from service.models import EvalRun, GenerationJob, TrainingJob

    kinds: list[tuple[str, Any, Any, Any, str]] = []
    if "generate" in queues:
        kinds.append(("generation", GenerationJob, true(), lambda row: "generation.run_job",
                      "job_id"))
    if "gpu" in queues:
        kinds.append(("training", TrainingJob, true(), lambda row: "training.run", "job_id"))
    eval_kinds = (["endpoint"] if "generate" in queues else []) + (
        ["base", "adapter"] if "gpu" in queues else [])
    if eval_kinds:
        kinds.append(("evaluation", EvalRun, EvalRun.model_kind.in_(eval_kinds),
                      evaluation_service.task_for, "run_id"))
    return kinds


def resend_queued(queues: set[str]) -> dict:
    """At worker start: send again every job still ``queued`` in the database. Besides the ones
    the broker never took (``sent_at`` NULL, also re-sent periodically, see
    :func:`resend_undelivered`), a broker without persistence loses the messages it held when it
    restarts. Once per worker start, so a busy queue is not flooded; a duplicate message is
    harmless because every task claims its job with a conditional UPDATE before working."""
    from service.core import jobs

    out: dict = {}
    with session_scope() as db:
        for label, model, where, task, id_arg in _job_kinds(queues):
            rows = list(db.scalars(select(model).where(model.status == "queued", where)
                                   .order_by(model.id)))
            for row in rows:
                jobs.enqueue(db, task(row), mark=(model, row.id), **{id_arg: row.id})
            out[label] = [row.id for row in rows]
    return out


def resend_undelivered(queues: set[str]) -> dict:
    """Every sweep: send the queued jobs whose message never reached the broker (``sent_at IS
    NULL``: the broker was down when they were committed), and only those, so the queue gets no
    duplicates of messages it already holds. Rows younger than ``RESEND_AFTER_SECONDS`` (by
    creation, or by the last heartbeat/re-queue) are left to the send that is under way.

    Each row is taken with a conditional ``UPDATE ... SET sent_at`` before its send, so two
    workers sweeping at once do not both send it; a send that fails puts ``sent_at`` back to
    NULL for the next sweep."""
    from service.core import jobs
    from service.core.db import get_sessionmaker, utcnow

    cutoff = utcnow() - timedelta(seconds=RESEND_AFTER_SECONDS)
    out: dict = {}
    maker = get_sessionmaker()
    for label, model, where, task, id_arg in _job_kinds(queues):
        with maker() as db:
            rows = [(row.id, task(row)) for row in db.scalars(select(model).where(
                model.status == "queued", model.sent_at.is_(None), where,
                model.created_at < cutoff,
                or_(model.heartbeat_at.is_(None), model.heartbeat_at < cutoff))
                .order_by(model.id))]
        sent = []
        for row_id, name in rows:
            stamp = utcnow()
            with maker() as db:
                taken = db.execute(update(model).where(
                    model.id == row_id, model.status == "queued", model.sent_at.is_(None))
                    .values(sent_at=stamp)).rowcount
                db.commit()
            if not taken:  # started, cancelled or sent by another worker meanwhile
                continue
            try:
                jobs.send_now(name, **{id_arg: row_id})
            except Exception:
                log.exception("could not re-send %s %s; next sweep tries again", label, row_id)
                with maker() as db:
                    db.execute(update(model).where(model.id == row_id, model.sent_at == stamp)
                               .values(sent_at=None))
                    db.commit()
                continue
            sent.append(row_id)
        if sent:
            out[label] = sent
    return out


def _sweeper_loop(queues: set[str], interval: float) -> None:
    try:
        resent = resend_queued(queues)
        if any(resent.values()):
            log.warning("re-sent queued jobs at worker start: %s", resent)
    except Exception:
        log.exception("re-sending queued jobs failed")
    while not _stop.wait(interval):
        try:
            result = sweep_once(queues)
            if any(result.values()):
                log.warning("resumed stale jobs: %s", result)
        except Exception:  # keep sweeping; a database hiccup must not kill the thread
            log.exception("sweeper failed")
        try:
            resent = resend_undelivered(queues)
            if resent:
                log.warning("re-sent never-delivered jobs: %s", resent)
        except Exception:
            log.exception("re-sending never-delivered jobs failed")


@worker_ready.connect
def _start_sweeper(sender=None, **_kwargs) -> None:
    try:  # ``sender`` is the worker's Consumer
        queues = {q.name for q in sender.task_consumer.queues}
    except AttributeError:
        queues = {"generate", "gpu"}
    interval = max(1.0, get_settings().job_stale_seconds / 2)
    threading.Thread(target=_sweeper_loop, args=(queues, interval), name="annotune-sweeper",
                     daemon=True).start()


@worker_shutting_down.connect
def _stop_sweeper(**_kwargs) -> None:
    _stop.set()
