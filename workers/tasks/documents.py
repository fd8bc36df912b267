from __future__ import annotations

from celery import shared_task

from service.core.db import session_scope
from service.documents import service as documents_service
from workers.documents import runner


@shared_task(name="documents.parse", acks_late=True, soft_time_limit=900, time_limit=960)
def parse(document_id: int) -> dict:
    return runner.parse(document_id)


@shared_task(name="documents.dedup", acks_late=True)
def dedup(project_id: int, threshold: float = 0.8) -> dict:
    with session_scope() as db:
        report = documents_service.mark_duplicates(db, project_id=project_id, threshold=threshold)
    return {k: report[k] for k in ("chunks", "clusters", "marked")}
