from __future__ import annotations

from celery import shared_task

from workers.review import runner as review_runner
from workers.samples import runner as samples_runner


@shared_task(name="samples.import", acks_late=True)
def import_file(job_id: int) -> dict:
    return samples_runner.run_import(job_id)


@shared_task(name="review.bulk", acks_late=True)
def bulk_job(job_id: str) -> dict:
    """A bulk change or assignment too big for one request (queue ingest, batches of
    ``review_bulk.BATCH``, one transaction each)."""
    return review_runner.run_job(job_id)
