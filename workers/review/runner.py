"""The bulk runner: a bulk change or assignment, one batch per transaction, under the job kit's
lease. Each batch's samples and the job's progress (``state``) commit together, fenced by the
lease, so a resumed job continues exactly where the last committed batch ended."""
from __future__ import annotations

from typing import Any

from service.core.db import get_sessionmaker
from service.review import bulk as review_bulk
from service.review.jobs import BULK
from workers import jobs as kit


def run_job(job_id: str) -> dict[str, Any]:
    """Task body for ``review.bulk``."""
    return kit.drive(BULK, job_id, _body)


def _body(lease: kit.Lease) -> dict[str, Any]:
    more = True
    while more:
        lease.check()
        with get_sessionmaker()() as db:
            job = review_bulk.locked(db, lease.row_id)
            more = job is not None and review_bulk.run_batch(db, job)
            lease.guard(db)
            db.commit()
    with get_sessionmaker()() as db:
        lease.finish("succeeded", db)
        db.commit()
        job = db.get(review_bulk.BulkJob, lease.row_id)
        return review_bulk.public(job)
