from __future__ import annotations

from celery import shared_task

from service.generation import service as generation_service


@shared_task(name="generation.run_job", acks_late=True)
def run_job(job_id: int) -> dict:
    return generation_service.run_job(job_id)


@shared_task(name="generation.sweep")
def sweep() -> dict:
    """Resume jobs whose worker vanished (also run periodically by every generate worker)."""
    return generation_service.sweep_stale_jobs()
