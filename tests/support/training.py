"""Training-job test steps shared by the SFT and preference job tests: waiting for a job, and
the SIGKILL-then-resume run through two real gpu workers."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select

from service.models import JobEvent, TrainingJob
from tests.support import worker as w

# a killed worker's job is stale (and re-queued by the next worker's sweep) after this long
STALE_ENV = {"ANNOTUNE_JOB_STALE_SECONDS": "4"}


def wait_job(db, job_id: int, statuses: tuple[str, ...], timeout: float = 300) -> TrainingJob:
    """The job once its status is one of ``statuses`` (re-read every half second)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        db.expire_all()
        job = db.get(TrainingJob, job_id)
        if job.status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job.status}")


def kill_after_checkpoint_then_resume(db, create: Callable[[], int], logs: Path, *,
                                      name: str = "gpu") -> tuple[TrainingJob, int]:
    """Run ``create()`` (it posts a job and returns its id) with a gpu worker up; SIGKILL that
    worker's whole process group once the job has written a checkpoint, as a crash or an OOM
    kill would; then start a second worker and wait until the job has finished there.

    Returns the finished job and the step it had reached when the first worker was killed. The
    workers' logs are ``logs/{name}-a.log`` and ``logs/{name}-b.log``; a failure shows their end.
    """
    first, second = logs / f"{name}-a.log", logs / f"{name}-b.log"
    w.purge()
    with w.running_worker("gpu", name=f"{name}-a", log_path=first, **STALE_ENV) as proc:
        job_id = create()
        w.wait_for(db, lambda: db.scalar(select(JobEvent.id).where(
            JobEvent.job_id == job_id, JobEvent.kind == "checkpoint")), 180,
            f"a checkpoint of job {job_id}", log=first)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    db.expire_all()
    killed_at = db.get(TrainingJob, job_id).step
    with w.running_worker("gpu", name=f"{name}-b", log_path=second, **STALE_ENV):
        job = wait_job(db, job_id, ("succeeded", "failed"), timeout=300)
    assert job.status == "succeeded", (job.error, second.read_text(errors="replace")[-3000:])
    assert job.attempts == 2
    return job, killed_at
