from __future__ import annotations

from celery import shared_task

from service.training import service as training_service


@shared_task(name="training.run", acks_late=True)
def run(job_id: int) -> dict:
    """Runs on the ``gpu`` queue (prefetch 1, one job per GPU worker)."""
    return training_service.run_job(job_id)
