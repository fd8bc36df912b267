from __future__ import annotations

from celery import shared_task

from workers.training import runner


@shared_task(name="training.run", acks_late=True)
def run(job_id: int) -> dict:
    """Runs on the ``gpu`` queue (prefetch 1, one job per GPU worker)."""
    return runner.run_job(job_id)
