from __future__ import annotations

from celery import shared_task

from service.samples import imports


@shared_task(name="samples.import", acks_late=True)
def import_file(job_id: int) -> dict:
    return imports.run_import(job_id)
