"""Diversity tasks: a thin shell over workers.diversity.runner."""
from __future__ import annotations

from celery import shared_task

from workers.diversity import runner


@shared_task(name="diversity.run_job", acks_late=True)
def run_job(job_id: int) -> dict:
    return runner.run_job(job_id)
