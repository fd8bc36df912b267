from __future__ import annotations

from celery import shared_task

from service.review import bulk as review_bulk
from service.samples import imports


@shared_task(name="samples.import", acks_late=True)
def import_file(job_id: int) -> dict:
    return imports.run_import(job_id)


@shared_task(name="review.bulk", acks_late=True)
def bulk_job(job_id: str) -> dict:
    """A bulk change or assignment too big for one request (queue ingest, batches of
    ``review_bulk.BATCH``, one transaction each)."""
    return review_bulk.run_job(job_id)
