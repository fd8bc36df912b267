"""``workers.jobs.Progress``: a loop's progress written by a thread of its own (a version build's
main thread no longer waits for the database between batches), at most once an interval, and
a cancel seen by that thread raised by the loop's next report. Real PostgreSQL/SQLite."""
from __future__ import annotations

import time

import pytest

from service.core.db import get_sessionmaker
from service.generation.jobs import GENERATION
from service.models import GenerationJob
from tests.generation.test_batching import _job_with_units
from tests.generation.test_engine import project  # noqa: F401  (fixture)
from tests.support.statements import statements
from workers import jobs as kit


def _row(job_id: int) -> GenerationJob:
    with get_sessionmaker()() as s:
        return s.get(GenerationJob, job_id)


def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def held(db, project, monkeypatch):  # noqa: F811
    """A generation job's row, held by a lease here: ``(job id, lease)``."""
    job_id = _job_with_units(db, project[1], 1, monkeypatch)
    return job_id, kit.claim(GENERATION, job_id)


def test_reports_are_written_at_most_once_an_interval_and_close_is_prompt(held):
    job_id, lease = held
    progress = kit.Progress(lease, interval=0.3)
    with statements() as seen:
        started = time.monotonic()
        for done in range(1, 201):  # a fast loop: 200 reports in ~0.2 s
            progress.report(done_units=done)
            time.sleep(0.001)
        _until(lambda: _row(job_id).done_units == 200, timeout=3)
        took = time.monotonic() - started
        closing = time.monotonic()
        progress.close()
        assert time.monotonic() - closing < 0.2  # not a sleeping interval
    updates = [s for s in seen if s.startswith("UPDATE generation_jobs")]
    assert 1 <= len(updates) <= 2 + took / 0.3, updates  # coalesced, not one per report


def test_a_cancel_seen_by_the_thread_stops_the_loop_at_its_next_report(held):
    job_id, lease = held
    progress = kit.Progress(lease, interval=0.05)
    progress.report(done_units=1)
    _until(lambda: _row(job_id).done_units == 1)
    with get_sessionmaker()() as s:  # a user cancels meanwhile
        s.execute(GenerationJob.__table__.update().where(GenerationJob.id == job_id)
                  .values(cancel_requested=True))
        s.commit()
    with pytest.raises(kit.Cancelled):
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # the loop goes on with its batches
            progress.report(done_units=2)
            time.sleep(0.01)
    with pytest.raises(kit.Cancelled):
        progress.close()
