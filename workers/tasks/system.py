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


# -- the sweeper: every worker resumes the jobs of its queues whose worker vanished -----------
import logging  # noqa: E402
import threading  # noqa: E402

from celery.signals import worker_ready, worker_shutting_down  # noqa: E402

from service.core.config import get_settings  # noqa: E402

log = logging.getLogger(__name__)
_stop = threading.Event()


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


def resend_queued(queues: set[str]) -> dict:
    """At worker start: send again the jobs still ``queued`` in the database, in case the broker
    was unreachable when they were committed. Runs once per worker start (not periodically, so a
    busy queue is not flooded); a duplicate message is harmless because every task claims its job
    with a conditional UPDATE before working."""
    from sqlalchemy import select

    from service.core import jobs
    from service.core.db import session_scope
    from service.evaluation import service as evaluation_service
    from service.models import EvalRun, GenerationJob, TrainingJob

    out: dict = {}
    with session_scope() as db:
        if "generate" in queues:
            ids = list(db.scalars(select(GenerationJob.id).where(GenerationJob.status == "queued")))
            for job_id in ids:
                jobs.enqueue(db, "generation.run_job", job_id=job_id)
            out["generation"] = ids
        if "gpu" in queues:
            ids = list(db.scalars(select(TrainingJob.id).where(TrainingJob.status == "queued")))
            for job_id in ids:
                jobs.enqueue(db, "training.run", job_id=job_id)
            out["training"] = ids
        runs = [r for r in db.scalars(select(EvalRun).where(EvalRun.status == "queued"))
                if ("generate" in queues and r.model_kind == "endpoint")
                or ("gpu" in queues and r.model_kind != "endpoint")]
        for run in runs:
            jobs.enqueue(db, evaluation_service.task_for(run), run_id=run.id)
        out["evaluation"] = [r.id for r in runs]
    return out


def _sweeper_loop(queues: set[str], interval: float) -> None:
    try:
        resent = resend_queued(queues)
        if any(resent.values()):
            log.warning("re-sent queued jobs: %s", resent)
    except Exception:
        log.exception("re-sending queued jobs failed")
    while not _stop.wait(interval):
        try:
            result = sweep_once(queues)
            if any(result.values()):
                log.warning("resumed stale jobs: %s", result)
        except Exception:  # keep sweeping; a database hiccup must not kill the thread
            log.exception("sweeper failed")


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
