"""Units in batches, so the database is not on each unit's critical path (issue 23.4).

:class:`Feed` hands the runner's threads claimed units, claiming up to one per thread in one
transaction when it runs dry (``FOR UPDATE SKIP LOCKED`` on PostgreSQL); units it claimed but no
thread started go back to ``pending`` when the runner stops, their attempt not counted.

:class:`Writer` is one thread that writes the units' outcomes: a thread hands over an outcome and
goes on to its next unit (claim, prompt), waiting for the outcome to be settled only before its
next model call; the writer applies every outcome waiting (up to ``MAX_BATCH``) in one
transaction fenced once by the lease, and commits. When one of them cannot be written (its
samples exist already, or the unit is no longer the attempt's), the batch is applied again with
a savepoint per outcome, so the others are still written. An outcome that is no longer
the unit's (the unit was reset meanwhile), or a whole batch the lease no longer allows, is not
written; what its attempt cost is recorded on the unit all the same (not fenced: tokens were
spent whoever holds the job now), as a thread did itself before.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from service.core.db import get_sessionmaker
from service.diversity import fanout
from service.models import Chunk, GenerationUnit, Sample, SampleRevision
from workers import jobs as kit

if TYPE_CHECKING:
    from workers.generation.runner import Attempt, Claimed

log = logging.getLogger(__name__)
MAX_BATCH = 64
"""Most outcomes one writer transaction holds, and most units one claim takes."""


class NotOurs(Exception):
    """Raised by an outcome inside its savepoint: the unit is no longer this attempt's."""


def claim_units(job_id: int, n: int) -> list[Claimed]:
    """Up to ``n`` pending units of the job, now ``running`` with one more attempt, with what
    running them needs (their chunks and genre–audience pairs), in one short transaction."""
    from workers.generation.runner import Claimed

    u = GenerationUnit
    with get_sessionmaker()() as db:
        pick = (select(u.id).where(u.job_id == job_id, u.status == "pending")
                .order_by(u.id).limit(n))
        if db.get_bind().dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        # a CTE, evaluated once: as ``id IN (subquery)`` PostgreSQL may scan the subquery
        # again per row and take more than ``n`` (24 of 8 in a test)
        picked = pick.cte("picked")
        rows = sorted(db.execute(
            update(u).where(u.id == picked.c.id, u.status == "pending")
            .values(status="running", attempts=u.attempts + 1)
            .returning(u.id, u.attempts, u.key, u.sample_id, u.chunk_id, u.ga_pair_id)
            .execution_options(synchronize_session=False)).all(), key=lambda r: r.id)
        chunk_ids = {r.chunk_id for r in rows if r.chunk_id}
        chunks = ({c.id: c for c in db.scalars(select(Chunk).where(Chunk.id.in_(chunk_ids)))}
                  if chunk_ids else {})
        pairs = fanout.pairs_variables(db, [r.ga_pair_id for r in rows if r.ga_pair_id])
        db.commit()
        db.expunge_all()
    return [Claimed(id=int(r.id), attempt=int(r.attempts), key=r.key, target=r.sample_id,
                    chunk=chunks.get(r.chunk_id) if r.chunk_id else None,
                    pair=pairs.get(r.ga_pair_id) if r.ga_pair_id else None) for r in rows]


def release_units(units: list[Claimed]) -> None:
    """Claimed units no thread started: back to ``pending``, the claim's attempt undone; only
    while they are still as this claim left them (a runner that took the job over since claims
    them again, with one more attempt, and keeps them)."""
    if not units:
        return
    u = GenerationUnit
    with get_sessionmaker()() as db:
        db.execute(update(u).where(u.status == "running", or_(*(
            and_(u.id == c.id, u.attempts == c.attempt) for c in units)))
                   .values(status="pending", attempts=u.attempts - 1, leased_until=None)
                   .execution_options(synchronize_session=False))
        db.commit()


class Feed:
    """Claimed units for the runner's threads, claimed ``batch`` at a time."""

    def __init__(self, job_id: int, batch: int, writer: Writer) -> None:
        self._job_id = job_id
        self._batch = max(1, min(batch, MAX_BATCH))
        self._writer = writer
        self._lock = threading.Lock()
        self._queue: deque[Claimed] = deque()

    def next(self) -> Claimed | None:
        """A unit to run, or None when none is left. Before saying none, the outcomes still on
        their way are written: a failed attempt puts its unit back to ``pending`` to be retried."""
        with self._lock:
            while not self._queue:
                settled = self._writer.settled
                self._queue.extend(claim_units(self._job_id, self._batch))
                if not self._queue:
                    self._writer.flush()
                    if self._writer.settled == settled:  # nothing written since the claim
                        return None
            return self._queue.popleft()

    def release(self) -> None:
        """The runner stops: the units no thread started go back (see :func:`release_units`)."""
        with self._lock:
            units = list(self._queue)
            self._queue.clear()
        release_units(units)


@dataclass
class Done:
    """A unit done with its samples, as data: the writer writes many of these in three
    statements (the samples, their revisions, the units' done marks)."""

    unit_id: int
    rows: list[dict[str, Any]]  # the samples, Core rows for an INSERT
    comment: str  # their first revision's
    raw_output: str | None
    latency_ms: int
    usage: dict[str, int]  # added to the unit's counters: prompt_tokens, ... retries


@dataclass
class Outcome:
    """One unit's outcome, as data (``done``: the unit done with its samples, written in bulk
    with the batch's others) or as ``apply(db)``, which writes it in the writer's transaction
    (raise :class:`NotOurs` when the unit is no longer the attempt's); ``on_conflict(db)``, when
    given, runs instead when the write hits an ``IntegrityError``."""

    attempt: Attempt
    apply: Callable[[Any], None] | None = None
    done: Done | None = None
    on_conflict: Callable[[Any], None] | None = None
    settled: threading.Event = field(default_factory=threading.Event)  # written, or refused


class Writer:
    """One thread writing outcomes in batched, fenced transactions (see the module docstring)."""

    def __init__(self, lease: kit.Lease, record_usage: Callable[[Attempt], None]) -> None:
        self._lease = lease
        self._record_usage = record_usage
        self._queue: queue.SimpleQueue[Outcome | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._in_flight = 0
        self.settled = 0  # outcomes settled so far (each committed, or refused, before it counts)
        self._mine = threading.local()  # each runner thread's last outcome
        self.stopped = False  # the lease refused a batch, or the database failed: stop the units
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"gen{lease.row_id}-writer")
        self._thread.start()

    def submit(self, outcome: Outcome) -> None:
        """Hand over an outcome; from now on the writer records the attempt's cost."""
        outcome.attempt.submitted = True
        with self._cond:
            self._in_flight += 1
        self._mine.last = outcome
        self._queue.put(outcome)

    def wait_own(self) -> None:
        """Wait until the calling thread's last outcome is settled. A runner thread calls it
        before its next model call: what it finished before a cancel is written before the
        cancel can refuse it, and a refusal (``stopped``) is seen before another call starts.
        The write still overlaps the next unit's claim and prompt, and the outcomes of many
        threads share one transaction."""
        last = getattr(self._mine, "last", None)
        if last is not None:
            last.settled.wait()

    def flush(self) -> None:
        """Wait until every outcome handed over so far is settled."""
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0)

    def close(self) -> None:
        """Write what is left and stop the thread; raise the error that stopped it, if any."""
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # close after this batch
                    break
                batch.append(nxt)
            try:
                self._write(batch)
            except BaseException as exc:  # the database failed: the job's body raises it
                log.exception("generation job %s: writing %d outcomes failed", self._lease.row_id,
                              len(batch))
                self.error, self.stopped = exc, True
            finally:
                for outcome in batch:
                    outcome.settled.set()
                with self._cond:
                    self._in_flight -= len(batch)
                    self.settled += len(batch)
                    self._cond.notify_all()

    def _write(self, batch: list[Outcome]) -> None:
        written: list[Outcome] = []
        if not self.stopped:
            with get_sessionmaker()() as db:
                try:  # all at once, the usual case
                    for outcome in batch:
                        if outcome.apply is not None:
                            outcome.apply(db)
                    _write_done(db, [o.done for o in batch if o.done is not None])
                    written = list(batch)
                except (NotOurs, IntegrityError):  # one is not: each in a savepoint of its own
                    db.rollback()
                    written = [outcome for outcome in batch if _apply(db, outcome)]
                try:
                    if written:
                        self._lease.fence(db)
                    db.commit()
                except kit.LeaseLost:
                    db.rollback()
                    written, self.stopped = [], True
        done = {id(outcome) for outcome in written}
        for outcome in batch:
            if id(outcome) in done:
                outcome.attempt.recorded = True
            else:
                self._record_usage(outcome.attempt)


_SAMPLES = Sample.__table__
_UNITS = GenerationUnit.__table__
# Core statements, built once: the ORM's bulk INSERT and a statement built per batch were most
# of the writer's CPU (~1.6 ms of ~4 ms per outcome at concurrency 64), all of it under the GIL
# the runner's threads need for their model calls
_INSERT_SAMPLES = insert(_SAMPLES).returning(_SAMPLES.c.id, sort_by_parameter_order=True)
_INSERT_REVISIONS = insert(SampleRevision.__table__)
_MARKS: dict[tuple[str, ...], Any] = {}


def _mark_statement(usage: tuple[str, ...]) -> Any:
    """The done marks' UPDATE (one row per unit, executemany), adding the ``usage`` columns."""
    stmt = _MARKS.get(usage)
    if stmt is None:
        u = _UNITS.c
        stmt = _MARKS[usage] = (
            _UNITS.update().where(u.id == bindparam("b_id"), u.status == "running")
            .values(status="done", raw_output=bindparam("b_raw"), error=None, error_code=None,
                    latency_ms=bindparam("b_latency"), leased_until=None,
                    sample_id=bindparam("b_sample"),
                    **{k: u[k] + bindparam(f"b_{k}") for k in usage}))
    return stmt


_USAGE = ("prompt_tokens", "completion_tokens", "requests", "repairs", "retries")
_ONE_STATEMENT: dict[tuple[str, ...], Any] = {}


def _one_statement(keys: tuple[str, ...]) -> Any:
    """PostgreSQL: a batch's samples, their first revisions and the units' done marks in one
    statement of constant text (data-modifying CTEs over ``jsonb_to_recordset``), built once
    per row shape. Its parameters are two JSON texts, so neither SQLAlchemy nor psycopg builds
    or parses SQL per batch, and the rows are not bound one value at a time (the three
    executemany statements were most of the writer's time under the GIL at concurrency 64)."""
    stmt = _ONE_STATEMENT.get(keys)
    if stmt is not None:
        return stmt
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    pg = PGDialect_psycopg()  # type: ignore[no-untyped-call]

    cols = ", ".join(keys)
    usage = ", ".join(f"{k} = u.{k} + m.{k}" for k in _USAGE)
    stmt = _ONE_STATEMENT[keys] = text(f"""
WITH r AS (
  SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb))
    AS r({", ".join(f"{k} {_SAMPLES.c[k].type.compile(dialect=pg)}" for k in keys)},
         revision_comment text, ord integer)
), ins AS (
  INSERT INTO samples ({cols}, created_at, updated_at)
  SELECT {cols}, CAST(:now AS timestamptz), CAST(:now AS timestamptz) FROM r ORDER BY ord
  RETURNING id, unit_key, messages, status
), rev AS (
  INSERT INTO sample_revisions (sample_id, version, action, messages_before, messages_after,
                                status_before, status_after, actor_id, comment, created_at)
  SELECT ins.id, 1, 'create', NULL, ins.messages, NULL, ins.status, NULL, r.revision_comment,
         CAST(:now AS timestamptz)
  FROM ins JOIN r ON r.unit_key = ins.unit_key
  RETURNING sample_id
), marks AS (
  UPDATE generation_units AS u SET status = 'done', raw_output = m.raw_output, error = NULL,
    error_code = NULL, latency_ms = m.latency_ms, leased_until = NULL,
    sample_id = (SELECT ins.id FROM ins WHERE ins.unit_key = m.first_key),
    updated_at = CAST(:now AS timestamptz), {usage}
  FROM jsonb_to_recordset(CAST(:marks AS jsonb))
    AS m(id bigint, raw_output text, latency_ms integer, first_key text,
         {", ".join(f"{k} integer" for k in _USAGE)})
  WHERE u.id = m.id AND u.status = 'running'
  RETURNING u.id
)
SELECT (SELECT count(*) FROM marks), (SELECT count(*) FROM rev)""")
    return stmt


def _write_done_pg(conn: Any, done: list[Done], keys: tuple[str, ...]) -> None:
    from service.core.db import json_dumps, utcnow

    rows = [{**row, "revision_comment": d.comment} for d in done for row in d.rows]
    for i, row in enumerate(rows):
        row["ord"] = i  # the samples' ids follow the batch's order
    marks = [{"id": d.unit_id, "raw_output": d.raw_output, "latency_ms": d.latency_ms,
              "first_key": d.rows[0]["unit_key"] if d.rows else None,
              **{k: d.usage.get(k, 0) for k in _USAGE}} for d in done]
    marked, revised = conn.execute(_one_statement(keys), {
        "rows": json_dumps(rows), "marks": json_dumps(marks), "now": utcnow()}).one()
    if revised != len(rows):  # never: each sample has one revision (unit keys are unique)
        raise RuntimeError(f"{revised} revisions written for {len(rows)} samples")
    if marked != len(done):
        raise NotOurs


def _write_done(db: Any, done: list[Done]) -> None:
    """Units done with their samples, in one statement on PostgreSQL (:func:`_one_statement`)
    and three on SQLite; :class:`NotOurs` when a unit is no longer its attempt's (the caller
    then writes each on its own)."""
    if not done:
        return
    conn = db.connection()
    rows = [row for d in done for row in d.rows]
    if (conn.dialect.name == "postgresql" and set(done[0].usage) <= set(_USAGE)
            and all(row.keys() == rows[0].keys() for row in rows)):  # one shape: one statement
        _write_done_pg(conn, done, tuple(rows[0]) if rows else ("project_id", "unit_key"))
    else:
        _write_done_each(conn, done, rows)


def _write_done_each(conn: Any, done: list[Done], rows: list[dict[str, Any]]) -> None:
    """The three statements (samples, revisions, marks) as executemany, on any database."""
    ids = iter(conn.execute(_INSERT_SAMPLES, rows).scalars().all() if rows else [])
    revisions, marks = [], []
    for d in done:
        mine = [next(ids) for _ in d.rows]
        revisions += [{"sample_id": sid, "version": 1, "action": "create",
                       "messages_before": None, "messages_after": row["messages"],
                       "status_before": None, "status_after": "pending", "actor_id": None,
                       "comment": d.comment} for sid, row in zip(mine, d.rows, strict=True)]
        marks.append({"b_id": d.unit_id, "b_raw": d.raw_output, "b_latency": d.latency_ms,
                      "b_sample": mine[0] if mine else None,
                      **{f"b_{k}": v for k, v in d.usage.items()}})
    if revisions:
        conn.execute(_INSERT_REVISIONS, revisions)
    if conn.execute(_mark_statement(tuple(done[0].usage)), marks).rowcount != len(done):
        raise NotOurs


def _apply(db: Any, outcome: Outcome) -> bool:
    """One outcome in its own savepoint: whether it was written."""
    try:
        with db.begin_nested():
            if outcome.done is not None:
                _write_done(db, [outcome.done])
            if outcome.apply is not None:
                outcome.apply(db)
        return True
    except NotOurs:
        return False
    except IntegrityError:
        if outcome.on_conflict is None:
            raise
    try:
        with db.begin_nested():
            outcome.on_conflict(db)
        return True
    except NotOurs:
        return False
