"""Bulk changes and assignment over many samples: in the request when few, as a task when many.

Up to ``TASK_THRESHOLD`` selected samples the work stays in the request, one transaction
(``samples_service.bulk_update``). Above it the API answers 202 with a job reference and the
``review.bulk`` task (queue ``ingest``, ``workers/review/runner.py``) walks the selection in id order, ``BATCH`` samples per
transaction, so one long transaction never holds a million row locks and progress is visible
while it runs.

Both paths write each sample with a compare-and-set on its version
(``samples_service.apply_bulk``): a sample that someone changed between the read and the write
is skipped and counted, never overwritten, and every change leaves the same ``bulk`` revision.
Only samples that existed when the request was made are touched (``upto_id``).

The job is a ``BulkJob`` row, created in the request's transaction (so it exists exactly when
its message is sent). Its ``state`` (selection, spec, progress) is updated in the same
transaction as each batch of samples, under a row lock, so a redelivered or duplicated task
continues exactly where the last committed batch ended.
"""
from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.lookup import get_in_project
from service.models import BulkJob, Sample
from service.review.jobs import BULK
from service.samples import service as samples_service

TASK_THRESHOLD = 2000  # more selected samples than this: a background task
BATCH = 500  # samples per transaction in the task

_COUNTS = ("processed", "changed", "unchanged", "skipped")


def public(job: BulkJob) -> dict[str, Any]:
    """What the API shows of a job (no filter internals, no actor)."""
    state = job.state or {}
    out: dict[str, Any] = {
        "id": job.id, "project_id": job.project_id, "kind": job.kind, "status": job.status,
        "matching": state.get("matching"), **{k: state.get(k, 0) for k in _COUNTS},
        "error": job.error,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "done": job.status in ("succeeded", "failed"),
    }
    if "per_annotator" in state:
        out["per_annotator"] = state["per_annotator"]
    return out


def get_job(db: Session, *, project_id: int, job_id: str) -> dict[str, Any]:
    """The public view of a job of this project (404 for another project's job)."""
    valid = job_id.isalnum() and len(job_id) <= 32  # a uuid4 hex
    return public(get_in_project(db, BulkJob, job_id if valid else None, project_id=project_id,
                                 what="bulk job", code="job_not_found"))


# -- starting a job ------------------------------------------------------------------------------

def _start(db: Session, *, project_id: int, actor_id: int | None, kind: str,
           flt: samples_service.SampleFilter, matching: int, spec: dict[str, Any],
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record the job and enqueue the task (sent once the request's transaction commits)."""
    upto = db.scalar(select(func.max(Sample.id)).where(and_(*flt.clauses(db, project_id)))) or 0
    state = {"filter": asdict(flt), "spec": spec, "upto_id": upto, "batch": BATCH,
             "matching": matching, "last_id": 0, "position": 0, **dict.fromkeys(_COUNTS, 0),
             **(extra or {})}
    job = BulkJob(id=uuid.uuid4().hex, project_id=project_id, kind=kind, status="queued",
                  actor_id=actor_id, state=state)
    db.add(job)
    db.flush()
    jobs.enqueue(db, BULK, job)
    return {**public(job), "job_id": job.id, "dry_run": False,
            "status_url": f"/api/v1/projects/{project_id}/review/jobs/{job.id}"}


def bulk_change(db: Session, *, project_id: int, actor_id: int | None,
                flt: samples_service.SampleFilter, matching: int, status: str | None = None,
                add_tags: list[str] | None = None, remove_tags: list[str] | None = None,
                assignee_id: int | None = None, unassign: bool = False) -> tuple[int, dict[str, Any]]:
    """Apply a bulk change: ``(200, counts)`` in the request, or ``(202, job)`` above the threshold."""
    spec = {"status": status, "add_tags": list(add_tags or []),
            "remove_tags": list(remove_tags or []), "assignee_id": assignee_id,
            "unassign": unassign}
    if matching > TASK_THRESHOLD:
        if status is not None:
            samples_service._check_status(status)
        return 202, _start(db, project_id=project_id, actor_id=actor_id, kind="change", flt=flt,
                           matching=matching, spec=spec)
    counts = samples_service.bulk_update(db, project_id=project_id, flt=flt, actor_id=actor_id,
                                         **spec)
    return 200, {"matching": matching, **counts, "dry_run": False}


def plan_counts(matching: int, annotator_ids: list[int], mode: str, count: int | None) -> dict[str, int]:
    """How many samples each annotator gets, from the number selected alone (no ids fetched)."""
    n = len(annotator_ids)
    if mode == "count":
        return {str(a): max(0, min(count or 0, matching - k * (count or 0)))
                for k, a in enumerate(annotator_ids)}
    return {str(a): (matching - k + n - 1) // n if matching > k else 0
            for k, a in enumerate(annotator_ids)}


def start_assign(db: Session, *, project_id: int, actor_id: int | None,
                 flt: samples_service.SampleFilter, annotator_ids: list[int], mode: str,
                 count: int | None, matching: int) -> dict[str, Any]:
    per = plan_counts(matching, annotator_ids, mode, count)
    spec = {"annotator_ids": annotator_ids, "mode": mode, "count": count}
    return _start(db, project_id=project_id, actor_id=actor_id, kind="assign", flt=flt,
                  matching=matching, spec=spec, extra={"per_annotator": per})


# -- the task ------------------------------------------------------------------------------------

def assignee_at(position: int, spec: dict[str, Any]) -> int | None:
    """The annotator the ``position``-th selected sample goes to (None: past the cap)."""
    ids, count = spec["annotator_ids"], spec.get("count")
    if spec["mode"] == "count":
        k = position // count
        return ids[k] if k < len(ids) else None
    if count and position >= count * len(ids):
        return None
    return ids[position % len(ids)]


def locked(db: Session, job_id: str) -> BulkJob | None:
    return db.scalar(select(BulkJob).where(BulkJob.id == job_id).with_for_update())


def run_batch(db: Session, job: BulkJob) -> bool:
    """One batch under the job's row lock; False when the selection is exhausted."""
    state = dict(job.state)
    flt = samples_service.SampleFilter(**state["filter"])
    rows = db.execute(select(*samples_service.BULK_COLUMNS)
                      .where(and_(*flt.clauses(db, job.project_id)), Sample.id > state["last_id"],
                             Sample.id <= state["upto_id"])
                      .order_by(Sample.id).limit(state["batch"])).all()
    position, done = state["position"], not rows
    for row in rows:
        spec = state["spec"]
        if job.kind == "assign":
            annotator = assignee_at(position, spec)
            if annotator is None:  # every annotator has their share
                done = True
                break
            position += 1
            spec = {"assignee_id": annotator}
        state[samples_service.bulk_change_row(db, row, actor_id=job.actor_id, **spec)] += 1
        state["processed"] += 1
        state["last_id"] = row.id
    state["position"] = position
    if rows and state["last_id"] >= state["upto_id"]:
        done = True
    job.state = state
    return not done
