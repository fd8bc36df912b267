"""The job kit: one lifecycle for every job row, used by every runner in ``workers/``.

A runner never works on a row it does not hold. :func:`claim` takes the row with one
conditional ``UPDATE`` (queued, or running with a heartbeat older than ``job_stale_seconds``),
counts an attempt, and writes a fresh ``lease_token``; past the kind's ``max_attempts`` the row
fails with a reason instead. The returned :class:`Lease`:

* renews ``heartbeat_at`` from a thread of its own every third of the stale time, whatever the
  runner is doing (a model loading, a batch generating), so the sweeper never resumes a job
  whose runner is alive; every renewal is ``WHERE lease_token = <mine>``, and when it matches
  nothing (the sweeper gave the row to another runner, a user cancelled a queued-state job) the
  lease is *lost* and the runner stops;
* reads ``cancel_requested`` at each renewal and on :meth:`Lease.check`, which runners call
  between units and inside long loops (training steps, eval batches, local generation);
* :meth:`Lease.guard` fences a runner's writes: in the runner's own transaction it touches the
  row ``WHERE lease_token = <mine> AND status = running AND NOT cancel_requested``; a write whose
  guard matches nothing is rolled back, so a lost or cancelled runner writes nothing;
* :meth:`Lease.finish` / :meth:`Lease.fail` close the row, again only while it is held.

:func:`sweep` is the one stale-job sweep: for every declared kind whose queue this worker
serves, a running row whose heartbeat went stale is put back to queued with its lease cleared
(fencing the old runner) and re-sent, or failed with a reason once its attempts are spent;
queued rows the broker never took are re-sent.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Select, and_, false, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from service.core import jobs
from service.core.config import get_settings
from service.core.db import get_sessionmaker, utcnow
from service.core.jobs import JobKind

log = logging.getLogger(__name__)

# the domains' declarations: importing them fills ``jobs.KINDS``
DECLARATIONS = (
    "service.documents.jobs",
    "service.samples.jobs",
    "service.review.jobs",
    "service.datasets.jobs",
    "service.generation.jobs",
    "service.training.jobs",
    "service.evaluation.jobs",
    "service.preferences.jobs",
    "service.diversity.jobs",
)

# a queued row whose message never reached the broker is re-sent once it is this old (seconds):
# younger ones may be in the middle of their first send, right after their commit
RESEND_AFTER_SECONDS = 30.0


def load_kinds() -> dict[str, JobKind]:
    import importlib

    for module in DECLARATIONS:
        importlib.import_module(module)
    return dict(jobs.KINDS)


class LeaseLost(Exception):
    """The row is no longer held by this runner (re-queued by the sweeper, cancelled, closed)."""


class Cancelled(Exception):
    """A user asked to cancel the job; raised by :meth:`Lease.check` between units."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def stale_seconds() -> float:
    return float(get_settings().job_stale_seconds)


def heartbeat_interval() -> float:
    return max(0.2, stale_seconds() / 3)


class Lease:
    """One runner's hold on one job row (see the module docstring)."""

    def __init__(self, kind: JobKind, row_id: Any, token: str, attempt: int):
        self.kind = kind
        self.row_id = row_id
        self.token = token
        self.attempt = attempt
        self.lost = False
        self.cancel_requested = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat_hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._polled = time.monotonic()
        self._fences: dict[str, Select[Any]] = {}

    # -- conditions -------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        return self.kind.model

    def _held(self) -> ColumnElement[bool]:
        m = self.model
        return and_(m.id == self.row_id, m.lease_token == self.token,
                    m.status == self.kind.running)

    # -- heartbeat --------------------------------------------------------------------------
    def on_beat(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at every heartbeat (e.g. renew unit leases); exceptions are logged."""
        self._beat_hooks.append(hook)

    def renew(self) -> bool:
        """Renew the heartbeat and read the cancel flag; False once the lease is lost."""
        if self.lost:
            return False
        m = self.model
        with self._lock, get_sessionmaker()() as db:
            row = db.execute(update(m).where(self._held()).values(heartbeat_at=utcnow())
                             .returning(m.cancel_requested)
                             .execution_options(synchronize_session=False)).first()
            db.commit()
        if row is None:
            self.lost = True
            log.warning("%s %s: lease lost (re-queued, cancelled or closed elsewhere)",
                        self.kind.label, self.row_id)
            return False
        self.cancel_requested = bool(row[0])
        for hook in self._beat_hooks:
            try:
                hook()
            except Exception:
                log.exception("%s %s: heartbeat hook failed", self.kind.label, self.row_id)
        return True

    def _beat_loop(self) -> None:
        while not self._stop.wait(heartbeat_interval()):
            try:
                if not self.renew():
                    return
            except Exception:  # a database hiccup: try again at the next beat
                log.exception("%s %s: heartbeat failed", self.kind.label, self.row_id)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._beat_loop, daemon=True,
                                        name=f"heartbeat-{self.kind.label}-{self.row_id}")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()

    # -- between units ------------------------------------------------------------------------
    def should_stop(self, max_age: float | None = None) -> bool:
        """Whether the runner must stop (lost, or cancel requested): what the heartbeat last
        saw, or read again when that is older than ``max_age`` seconds (cheap enough for a
        model's stopping criterion: at most one small query per ``max_age``)."""
        if (max_age is not None and not self.should_stop()
                and time.monotonic() - self._polled > max_age):
            self._polled = time.monotonic()
            try:
                self.check()
            except (LeaseLost, Cancelled):
                pass
        return self.lost or self.cancel_requested

    def check(self) -> None:
        """Between units: read the row now; raise :class:`LeaseLost` or :class:`Cancelled`."""
        if not self.lost:
            m = self.model
            with get_sessionmaker()() as db:
                row = db.execute(select(m.cancel_requested).where(self._held())).first()
            if row is None:
                self.lost = True
            else:
                self.cancel_requested = self.cancel_requested or bool(row[0])
        if self.lost:
            raise LeaseLost(f"{self.kind.label} {self.row_id}")
        if self.cancel_requested:
            raise Cancelled(f"{self.kind.label} {self.row_id}")

    def guard(self, db: Session, *, allow_cancelled: bool = False, **values: Any) -> None:
        """In the runner's transaction: fence the write (and apply ``values`` to the row).

        Raises :class:`LeaseLost` when the row is not held, or a cancel was requested: the
        caller's transaction must then be rolled back, so nothing is written after a cancel.
        ``allow_cancelled``: progress a runner still reports while it winds down on a cancel
        (a training job's last step and its checkpoint).
        """
        m = self.model
        held = self._held() if allow_cancelled else and_(self._held(),
                                                          m.cancel_requested.is_(false()))
        done = db.execute(update(m).where(held).values(heartbeat_at=utcnow(), **values)
                          .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        if not done:
            raise LeaseLost(f"{self.kind.label} {self.row_id}")

    def fence(self, db: Session) -> None:
        """In the runner's transaction: check the lease is held and no cancel was asked, and
        hold the row with a *shared* lock (PostgreSQL ``FOR SHARE``) until the transaction
        ends, so a cancel or a re-queue (an ``UPDATE`` of the row) waits for this write and
        every write after it sees the new state. Unlike :meth:`guard`, concurrent writers of
        one job do not queue on each other. Raises :class:`LeaseLost` (roll back)."""
        dialect = db.get_bind().dialect.name
        stmt = self._fences.get(dialect)
        if stmt is None:  # built once per lease: a generation job fences every batch it writes
            m = self.model
            stmt = select(m.id).where(self._held(), m.cancel_requested.is_(false()))
            if dialect == "postgresql":
                stmt = stmt.with_for_update(read=True)
            self._fences[dialect] = stmt
        if db.execute(stmt).first() is None:
            raise LeaseLost(f"{self.kind.label} {self.row_id}")

    def update(self, **values: Any) -> bool:
        """A short transaction of its own: update the held row (progress); False if not held."""
        with get_sessionmaker()() as db:
            m = self.model
            done = db.execute(update(m).where(self._held()).values(heartbeat_at=utcnow(), **values)
                              .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
            db.commit()
        if not done:
            self.lost = True
        return bool(done)

    # -- closing ------------------------------------------------------------------------------
    def finish(self, status: str, db: Session | None = None, **values: Any) -> bool:
        """Close the row as ``status`` (in ``db``'s transaction when given, else its own)."""
        stmt = (update(self.model).where(self._held())
                .values(status=status, finished_at=utcnow(), heartbeat_at=utcnow(),
                        lease_token=None, **values)
                .execution_options(synchronize_session=False))
        if db is not None:
            done = db.execute(stmt).rowcount  # type: ignore[attr-defined]
        else:
            with get_sessionmaker()() as own:
                done = own.execute(stmt).rowcount  # type: ignore[attr-defined]
                own.commit()
        self._stop.set()
        if not done:
            self.lost = True
        return bool(done)

    def seal(self, db: Session, **values: Any) -> None:
        """In the runner's transaction, after the body wrote the row's final state itself (a
        version's build sets ``ready``): check the lease is still ours and release it. Raises
        :class:`LeaseLost` otherwise (the caller rolls back: a re-queued row is not sealed)."""
        m = self.model
        done = db.execute(update(m).where(m.id == self.row_id, m.lease_token == self.token)
                          .values(lease_token=None, finished_at=utcnow(), heartbeat_at=utcnow(),
                                  **values)
                          .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        self._stop.set()
        if not done:
            self.lost = True
            raise LeaseLost(f"{self.kind.label} {self.row_id}")

    def fail(self, reason: str, **values: Any) -> bool:
        log.warning("%s %s failed: %s", self.kind.label, self.row_id, reason)
        return self.finish("failed", error=reason[:4000], **values)


class Progress:
    """Progress of a CPU-bound loop, written by a thread of its own: ``report(**values)`` only
    hands the latest values over, and the thread writes them (:meth:`Lease.update`) and reads
    the cancel flag (:meth:`Lease.check`) at most every ``interval`` seconds. So the loop never
    waits for the database between its batches (a version build at 1M: ~2 s of its main
    thread). A cancel or a lost lease the thread saw is raised by the loop's next ``report``
    (or by :meth:`close`), as a synchronous check would have, at most ``interval`` later."""

    def __init__(self, lease: Lease, interval: float = 0.5) -> None:
        self._lease = lease
        self._interval = interval
        self._latest: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"progress-{lease.kind.label}-{lease.row_id}")
        self._thread.start()

    def report(self, **values: Any) -> None:
        if self._error is not None:
            raise self._error
        self._latest = values
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            values, self._latest = self._latest, None
            try:
                if values is not None:
                    self._lease.update(**values)
                self._lease.check()
            except (Cancelled, LeaseLost) as exc:
                self._error = exc
                return
            except Exception:  # a database hiccup: the next report tries again
                log.exception("%s %s: progress not written", self._lease.kind.label,
                              self._lease.row_id)
            self._stop.wait(self._interval)

    def close(self) -> None:
        """Stop the thread (what it has not written yet is left: the caller writes the final
        values itself); raise the cancel or loss it saw."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        if self._error is not None:
            raise self._error


def claim(kind: JobKind, row_id: Any, *, db: Session | None = None) -> Lease | None:
    """Take row ``row_id`` of ``kind``: queued, or running with a stale heartbeat.

    Counts an attempt; a row claimed more than ``kind.max_attempts`` times fails with a reason
    (its runners keep dying) and ``None`` is returned, as when another runner holds it or it is
    finished. The lease's heartbeat starts when the lease is entered (``with lease:``).
    """
    m = kind.model
    now = utcnow()
    stale = now - timedelta(seconds=stale_seconds())
    token = uuid.uuid4().hex
    maker = get_sessionmaker()
    with maker() as s:
        row = s.execute(update(m).where(
            m.id == row_id,
            or_(m.status == kind.queued,
                and_(m.status == kind.running,
                     or_(m.heartbeat_at.is_(None), m.heartbeat_at < stale))))
            .values(status=kind.running, attempts=m.attempts + 1, lease_token=token,
                    heartbeat_at=now, worker=worker_name(), error=None,
                    started_at=func.coalesce(m.started_at, now),
                    sent_at=func.coalesce(m.sent_at, now))
            .returning(m.attempts, m.cancel_requested)
            .execution_options(synchronize_session=False)).first()
        s.commit()
    if row is None:
        return None
    attempts, cancel = int(row[0]), bool(row[1])
    lease = Lease(kind, row_id, token, attempts)
    lease.cancel_requested = cancel
    if attempts > kind.max_attempts:
        lease.fail(f"gave up after {kind.max_attempts} attempts: the worker running it stopped "
                   "each time (killed, out of memory, or stalled); see the worker's log")
        return None
    if attempts > 1:
        log.warning("%s %s: attempt %s on %s (resuming)", kind.label, row_id, attempts,
                    worker_name())
    return lease


def drive(kind: JobKind, row_id: Any, body: Callable[[Lease], dict[str, Any]]) -> dict[str, Any]:
    """Claim, hold (heartbeat), run ``body``, and close on an unexpected error with a reason.

    ``body`` closes the row itself on success (``lease.finish``). :class:`LeaseLost` ends the
    run quietly (someone else holds or closed the row); :class:`Cancelled` that the body did not
    handle closes the row as cancelled; any other exception fails the row with its message.
    """
    lease = claim(kind, row_id)
    if lease is None:
        return {"status": "skipped"}
    with lease:
        try:
            return body(lease)
        except LeaseLost:
            return {"status": "lost"}
        except Cancelled:
            lease.finish("cancelled")
            return {"status": "cancelled"}
        except Exception as exc:
            log.exception("%s %s failed", kind.label, row_id)
            lease.fail(f"{type(exc).__name__}: {exc}")
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


# -- the sweep --------------------------------------------------------------------------------

def _served(kind: JobKind, queues: set[str]) -> ColumnElement[bool] | None:
    """Rows of ``kind`` that a worker consuming ``queues`` is responsible for: those sent to one
    of its queues (a row's own ``queue`` when set, else its kind's)."""
    m = kind.model
    if kind.queue_of is None and kind.queue not in queues:
        return None
    cond = func.coalesce(m.queue, kind.queue).in_(sorted(queues))
    return and_(cond, kind.select()) if kind.select is not None else cond


def _kinds_for(queues: set[str]) -> Iterable[tuple[JobKind, ColumnElement[bool]]]:
    for kind in load_kinds().values():
        cond = _served(kind, queues)
        if cond is not None:
            yield kind, cond


def _send(kind: JobKind, row_id: Any, queue: str | None) -> bool:
    return jobs.deliver(kind.name, {kind.id_arg: row_id}, mark=(kind.model, row_id),
                        queue=queue if queue and queue != kind.queue else None)


def requeue_stale(queues: set[str]) -> dict[str, list[Any]]:
    """Running rows whose heartbeat is older than the stale time: their runner is gone.

    Each is put back to queued with its lease cleared (``WHERE lease_token = <the dead one>``,
    so two sweepers never both take it, and the old runner, if it was only slow, is fenced off)
    and sent again; a row whose attempts are spent fails with a reason instead.
    """
    stale = utcnow() - timedelta(seconds=stale_seconds())
    out: dict[str, list[Any]] = {}
    maker = get_sessionmaker()
    for kind, cond in _kinds_for(queues):
        m = kind.model
        with maker() as db:
            rows = db.execute(select(m.id, m.lease_token, m.attempts, m.queue, m.heartbeat_at)
                              .where(cond, m.status == kind.running,
                                     or_(m.heartbeat_at.is_(None), m.heartbeat_at < stale))
                              .order_by(m.id)).all()
        for row_id, token, attempts, queue, beat in rows:
            token_cond = m.lease_token.is_(None) if token is None else m.lease_token == token
            spent = attempts >= kind.max_attempts
            values: dict[str, Any] = (
                {"status": "failed", "finished_at": utcnow(), "lease_token": None,
                 "error": f"gave up after {attempts} attempts: the worker running it stopped "
                          f"(last heartbeat {_ago(beat)}); see the worker's log"}
                if spent else
                {"status": kind.queued, "lease_token": None, "sent_at": None,
                 "heartbeat_at": utcnow()})
            with maker() as db:
                taken = db.execute(update(m).where(m.id == row_id, m.status == kind.running,
                                                   token_cond).values(**values)
                                   .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
                db.commit()
            if not taken:
                continue
            out.setdefault(kind.label, []).append(row_id)
            if spent:
                log.warning("%s %s: gave up after %s attempts", kind.label, row_id, attempts)
            else:
                _send(kind, row_id, queue)
    return out


def _ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    return f"{int((utcnow() - when).total_seconds())} s ago"


def resend_queued(queues: set[str]) -> dict[str, list[Any]]:
    """At worker start: send again every row still queued. A broker without persistence loses
    the messages it held when it restarts; a duplicate is harmless (claims are conditional)."""
    out: dict[str, list[Any]] = {}
    for kind, cond in _kinds_for(queues):
        m = kind.model
        with get_sessionmaker()() as db:
            rows = db.execute(select(m.id, m.queue).where(cond, m.status == kind.queued)
                              .order_by(m.id)).all()
        for row_id, queue in rows:
            if _send(kind, row_id, queue):
                out.setdefault(kind.label, []).append(row_id)
    return out


def resend_undelivered(queues: set[str]) -> dict[str, list[Any]]:
    """Every sweep: send the queued rows whose message never reached the broker (``sent_at IS
    NULL``), and only those, so the queue gets no duplicates of messages it already holds. Each
    is taken with a conditional ``UPDATE ... SET sent_at`` first, so two sweepers do not both
    send it; a send that fails puts ``sent_at`` back to NULL for the next sweep."""
    cutoff = utcnow() - timedelta(seconds=RESEND_AFTER_SECONDS)
    out: dict[str, list[Any]] = {}
    maker = get_sessionmaker()
    for kind, cond in _kinds_for(queues):
        m = kind.model
        with maker() as db:
            rows = db.execute(select(m.id, m.queue).where(
                cond, m.status == kind.queued, m.sent_at.is_(None), m.created_at < cutoff,
                or_(m.heartbeat_at.is_(None), m.heartbeat_at < cutoff)).order_by(m.id)).all()
        for row_id, queue in rows:
            stamp = utcnow()
            with maker() as db:
                taken = db.execute(update(m).where(m.id == row_id, m.status == kind.queued,
                                                   m.sent_at.is_(None)).values(sent_at=stamp)
                                   .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
                db.commit()
            if not taken:
                continue
            try:
                jobs.send_now(kind.name, **({"_queue": queue} if queue and queue != kind.queue
                                            else {}), **{kind.id_arg: row_id})
            except Exception:
                log.exception("could not re-send %s %s; next sweep tries again", kind.label, row_id)
                with maker() as db:
                    db.execute(update(m).where(m.id == row_id, m.sent_at == stamp)
                               .values(sent_at=None).execution_options(synchronize_session=False))
                    db.commit()
                continue
            out.setdefault(kind.label, []).append(row_id)
    return out


def sweep(queues: set[str]) -> dict[str, Any]:
    """One sweep for a worker consuming ``queues``: resume or give up stale rows, re-send the
    never-delivered ones."""
    return {"requeued": requeue_stale(queues), "resent": resend_undelivered(queues)}


__all__ = ["Cancelled", "Lease", "LeaseLost", "claim", "drive", "load_kinds", "requeue_stale",
           "resend_queued", "resend_undelivered", "sweep"]
