from __future__ import annotations

from celery import shared_task

from workers.generation import runner


@shared_task(name="generation.run_job", acks_late=True)
def run_job(job_id: int) -> dict:
    """One runner per job holds it under the job kit's lease (``workers/jobs.py``)."""
    return runner.run_job(job_id)
