"""Enqueue Celery tasks by name, only once the surrounding transaction commits.

The web process never imports a task module (and so never imports torch): tasks are sent by
name through a client-side Celery app that shares the worker's configuration.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery
from kombu import Queue
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from service.core.config import Settings, get_settings

log = logging.getLogger(__name__)

QUEUES = ("ingest", "generate", "gpu")

# task name prefix -> queue
ROUTES: dict[str, str] = {
    "system.": "ingest",
    "documents.": "ingest",
    "samples.": "ingest",
    "datasets.": "ingest",
    "generation.": "generate",
    "evaluation.endpoint": "generate",
    "evaluation.": "gpu",
    "training.": "gpu",
}

_PENDING_KEY = "annotune_pending_tasks"


def queue_for(name: str) -> str:
    for prefix, queue in ROUTES.items():
        if name.startswith(prefix):
            return queue
    return "ingest"


def configure_celery(app: Celery, settings: Settings) -> Celery:
    broker = settings.resolved_broker_url
    conf: dict[str, Any] = dict(
        broker_url=broker,
        result_backend=settings.result_backend or None,
        task_queues=[Queue(q) for q in QUEUES],
        task_default_queue="ingest",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=not settings.result_backend,
        broker_connection_retry_on_startup=True,
        task_always_eager=settings.celery_eager,
        task_eager_propagates=True,
        timezone="UTC",
        enable_utc=True,
        worker_hijack_root_logger=False,
    )
    if broker.startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("in", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        conf["broker_transport_options"] = {
            "data_folder_in": str(folder / "in"),
            "data_folder_out": str(folder / "in"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    elif broker.startswith("redis"):
        # longer than the longest training run, so a late-acked GPU task is not redelivered early
        conf["broker_transport_options"] = {"visibility_timeout": 24 * 3600}
    app.conf.update(conf)
    return app


@lru_cache
def client_app() -> Celery:
    """A Celery app that can send tasks by name; it imports no task module."""
    return configure_celery(Celery("annotune-client"), get_settings())


def send_now(name: str, **kwargs: Any) -> None:
    if get_settings().celery_eager:
        # scripts and unit tests: run in this process, after the commit, like a worker would
        from workers.celery_app import app as worker_app

        worker_app.tasks[name].apply(kwargs=kwargs).get()
        return
    client_app().send_task(name, kwargs=kwargs, queue=queue_for(name))


def mark_sent(model: Any, row_id: int) -> None:
    """Record that the broker accepted the message of job row ``row_id`` (``model.sent_at``).

    A short transaction of its own, after the caller's commit: the caller's session is done, and
    a failure here only means the row may be re-sent once more, which every task tolerates.
    """
    from service.core.db import get_sessionmaker, utcnow

    try:
        with get_sessionmaker()() as db:
            db.execute(update(model).where(model.id == row_id).values(sent_at=utcnow()))
            db.commit()
    except Exception:
        log.exception("could not mark %s %s as sent", getattr(model, "__tablename__", model), row_id)


def enqueue(session: Session, name: str, *, mark: tuple[Any, int] | None = None,
            **kwargs: Any) -> None:
    """Record that task ``name`` should run; it is sent after commit and dropped on rollback.

    Savepoints are honoured: a task enqueued inside ``begin_nested()`` that is rolled back is
    dropped, while the tasks of the outer transaction are still sent.

    ``mark=(Model, id)``: the job row this message drives; once the broker accepted the message
    (or the task ran, in eager mode) its ``sent_at`` is set, so that the workers' sweepers can
    re-send exactly the rows whose message never left (``sent_at IS NULL``).
    """
    tx = session.get_nested_transaction() or session.get_transaction()
    chain = []
    while tx is not None:
        chain.append(tx)
        tx = tx.parent
    session.info.setdefault(_PENDING_KEY, []).append((name, kwargs, chain, mark))


_ROLLED_BACK_KEY = "annotune_rolled_back_tx"


@event.listens_for(Session, "after_soft_rollback")
def _mark_rolled_back(session: Session, previous_transaction: Any) -> None:
    if session.info.get(_PENDING_KEY):
        session.info.setdefault(_ROLLED_BACK_KEY, []).append(previous_transaction)


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return  # SQLAlchemy 2.1 also fires after_commit when a savepoint is released
    pending = session.info.pop(_PENDING_KEY, [])
    rolled_back = session.info.pop(_ROLLED_BACK_KEY, [])
    for name, kwargs, chain, mark in pending:
        if any(tx is dead for tx in chain for dead in rolled_back):
            continue
        _deliver(name, kwargs, mark)


def _deliver(name: str, kwargs: dict[str, Any], mark: tuple[Any, int] | None) -> None:
    eager = get_settings().celery_eager
    try:
        send_now(name, **kwargs)
    except Exception:
        if not eager:  # the row stays queued with sent_at NULL; a worker's sweeper re-sends it
            log.exception("could not send task %s", name)
            return
        # eager: the task ran here and failed; it was delivered all the same
        log.exception("task %s failed", name)
    if mark is not None:
        mark_sent(*mark)


@event.listens_for(Session, "after_transaction_end")
def _forget_on_root_end(session: Session, transaction: Any) -> None:
    # the outermost transaction ended without a commit (rollback/close): drop everything
    if transaction.parent is None and not transaction.nested:
        if any(tx is transaction for tx in session.info.get(_ROLLED_BACK_KEY, [])):
            session.info.pop(_PENDING_KEY, None)
            session.info.pop(_ROLLED_BACK_KEY, None)
