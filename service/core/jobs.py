"""Job declarations and enqueue: tasks are sent by name, only once the transaction commits.

Every background task is declared once, by the domain that owns it, as a :class:`Task` (a name
and a queue) or a :class:`JobKind` (a task that drives one job row: its model, the task's id
argument, and the words the table uses for its states). :func:`enqueue` takes a declaration,
never a bare string, and the workers' job kit (``workers/jobs.py``) and sweeper walk the same
registry. ``core`` imports no domain: the domains register their kinds when imported.

The web process never imports a task module (and so never imports torch): tasks are sent by
name through a client-side Celery app that shares the worker's configuration.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

from celery import Celery
from kombu.entity import Queue
from pydantic import BaseModel, ConfigDict, computed_field
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from service.core.config import Settings, get_settings

log = logging.getLogger(__name__)

QUEUES = ("ingest", "generate", "gpu")

_PENDING_KEY = "annotune_pending_tasks"


@dataclass(frozen=True)
class Task:
    """A task the API or a worker may send: its name (``domain.verb``) and its queue."""

    name: str
    queue: str

    def __post_init__(self) -> None:
        if self.queue not in QUEUES:
            raise ValueError(f"task {self.name}: unknown queue {self.queue!r}")
        TASKS[self.name] = self


@dataclass(frozen=True)
class JobKind(Task):
    """A task that drives one job row (see ``service.models.job.JobMixin``).

    ``queued``/``running``: the table's words for those states (a version is ``building``);
    ``finished``: its final words. ``select``: an extra condition on the rows of this kind when
    two kinds share a table (evaluation runs on endpoints and on local models).
    ``queue_of``: the queue of one row, when it depends on the row (a generation job with the
    in-worker model runs with the heavy local work on ``gpu``).
    """

    model: Any = None
    id_arg: str = "job_id"
    label: str = ""
    queued: str = "queued"
    running: str = "running"
    finished: tuple[str, ...] = ("succeeded", "failed", "cancelled")
    max_attempts: int = 3
    select: Callable[[], Any] | None = None
    queue_of: Callable[[Any], str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model is None:
            raise ValueError(f"job kind {self.name}: no model")
        KINDS[self.name] = self

    def queue_for_row(self, row: Any) -> str:
        return self.queue_of(row) if self.queue_of is not None else self.queue


TASKS: dict[str, Task] = {}
KINDS: dict[str, JobKind] = {}


def queue_for(name: str) -> str:
    task = TASKS.get(name)
    if task is None:
        raise KeyError(f"task {name!r} is not declared (service/<domain>/jobs.py)")
    return task.queue


def configure_celery(app: Celery, settings: Settings) -> Celery:
    broker = settings.resolved_broker_url
    conf: dict[str, Any] = {
        "broker_url": broker,
        "result_backend": settings.result_backend or None,
        "task_queues": [Queue(q) for q in QUEUES],  # type: ignore[no-untyped-call]
        "task_default_queue": "ingest",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": not settings.result_backend,
        # a broker that goes away (Redis restarted) is waited for, with back-off, forever:
        # the worker must not exit with "Unrecoverable error" and leave its queues unserved
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_always_eager": settings.celery_eager,
        "task_eager_propagates": True,
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
    }
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
        # longer than the longest training run, so a late-acked GPU task is not redelivered early;
        # a job whose worker died is resumed by the sweepers (heartbeat), not by redelivery
        conf["broker_transport_options"] = {"visibility_timeout": 24 * 3600,
                                            "socket_keepalive": True,
                                            "retry_on_timeout": True}
    app.conf.update(conf)
    return app


@lru_cache
def client_app() -> Celery:
    """A Celery app that can send tasks by name; it imports no task module."""
    return configure_celery(Celery("annotune-client"), get_settings())


# eager mode (scripts and tests): the worker's app, bound by ``workers.celery_app`` when imported
_worker_app: Celery | None = None


def bind_worker_app(app: Celery) -> None:
    global _worker_app
    _worker_app = app


def send_now(name: str, _queue: str | None = None, **kwargs: Any) -> None:
    """Send task ``name`` now (``_queue``: another queue than the task's declared one)."""
    if get_settings().celery_eager:
        # scripts and unit tests: run in this process, after the commit, like a worker would
        if _worker_app is None:
            raise RuntimeError("eager mode runs tasks in this process: import workers.celery_app "
                               "first (the API process never does)")
        _worker_app.tasks[name].apply(kwargs=kwargs).get()
        return
    client_app().send_task(name, kwargs=kwargs, queue=_queue or queue_for(name))


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


def enqueue(session: Session, task: Task, row: Any = None, **kwargs: Any) -> None:
    """Record that ``task`` should run; it is sent after commit and dropped on rollback.

    ``task`` is a declaration (:class:`Task` or :class:`JobKind`), never a bare name. For a
    :class:`JobKind`, pass the job ``row`` (or its id): the task gets ``{kind.id_arg: id}``, and
    once the broker took the message the row's ``sent_at`` is set, so that the workers'
    sweepers re-send exactly the rows whose message never left (``sent_at IS NULL``).

    Savepoints are honoured: a task enqueued inside ``begin_nested()`` that is rolled back is
    dropped, while the tasks of the outer transaction are still sent.
    """
    if not isinstance(task, Task):
        raise TypeError(f"enqueue takes a Task or JobKind declaration, not {task!r}")
    mark: tuple[Any, Any] | None = None
    queue: str | None = None
    if isinstance(task, JobKind):
        if row is None:
            raise TypeError(f"{task.name}: enqueue needs the job row")
        row_id = row if isinstance(row, int) else row.id
        kwargs = {task.id_arg: row_id, **kwargs}
        mark = (task.model, row_id)
        if not isinstance(row, int) and task.queue_of is not None:
            queue = task.queue_for_row(row)
    tx = session.get_nested_transaction() or session.get_transaction()
    chain = []
    while tx is not None:
        chain.append(tx)
        tx = tx.parent
    session.info.setdefault(_PENDING_KEY, []).append((task.name, queue, kwargs, chain, mark))


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
    for name, queue, kwargs, chain, mark in pending:
        if any(tx is dead for tx in chain for dead in rolled_back):
            continue
        deliver(name, kwargs, mark=mark, queue=queue)


def deliver(name: str, kwargs: dict[str, Any], *, mark: tuple[Any, int] | None = None,
            queue: str | None = None) -> bool:
    """Send now; True once the broker took it (and the row's ``sent_at`` is stamped)."""
    eager = get_settings().celery_eager
    try:
        if queue is None:
            send_now(name, **kwargs)
        else:
            send_now(name, _queue=queue, **kwargs)
    except Exception:
        if not eager:  # the row stays queued with sent_at NULL; a worker's sweeper re-sends it
            log.exception("could not send task %s", name)
            return False
        # eager: the task ran here and failed; it was delivered all the same
        log.exception("task %s failed", name)
    if mark is not None:
        mark_sent(*mark)
    return True


@event.listens_for(Session, "after_transaction_end")
def _forget_on_root_end(session: Session, transaction: Any) -> None:
    # the outermost transaction ended without a commit (rollback/close): drop everything
    if transaction.parent is None and not transaction.nested and any(
            tx is transaction for tx in session.info.get(_ROLLED_BACK_KEY, [])):
        session.info.pop(_PENDING_KEY, None)
        session.info.pop(_ROLLED_BACK_KEY, None)


def is_dead(kind: JobKind, row: Any) -> bool:
    """A running row whose runner stopped heart-beating (the sweeper will re-queue it): a
    retried request may start a fresh attempt instead of returning it."""
    from datetime import timedelta

    from service.core.db import utcnow

    if row.status != kind.running:
        return False
    stale = utcnow() - timedelta(seconds=get_settings().job_stale_seconds)
    return row.heartbeat_at is None or row.heartbeat_at < stale


PING = Task("system.ping", "ingest")


class JobLifecycleRead(BaseModel):
    """The lifecycle fields every job's API shape carries (``JobMixin``), and why a queued job
    is not running yet (``waiting``)."""

    model_config = ConfigDict(from_attributes=True)
    default_queue: ClassVar[str] = "ingest"
    queued_word: ClassVar[str] = "queued"

    status: str
    attempts: int = 0
    worker: str | None = None
    queue: str | None = None
    cancel_requested: bool = False
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    sent_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def waiting(self) -> str | None:
        if self.status != self.queued_word:
            return None
        if self.sent_at is None:
            return "not yet handed to the broker (the workers re-send it)"
        return f"waiting for a free worker on the {self.queue or self.default_queue!r} queue"
