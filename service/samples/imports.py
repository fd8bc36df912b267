"""Dataset imports: the upload is stored, then a task parses it as one transaction.

``strict``: any invalid line rejects the whole file and nothing is written; the report lists
every bad line with its error. ``skip``: valid lines are imported and the report lists each
skipped line and why. Either way the samples are written in one transaction: never half.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from service.core import jobs, storage
from service.core.config import get_settings
from service.core.db import get_sessionmaker, utcnow
from service.core.errors import Invalid, NotFound
from service.models import ImportJob, Sample, SampleRevision
from service.samples import importing
from service.samples.formats import FORMATS, FormatError
from service.samples.service import content_hash

log = logging.getLogger(__name__)
REPORT_LIMIT = 10_000  # detailed entries kept; counts are always exact
BATCH = 1000


def create_import_job(db: Session, *, project_id: int, upload: BinaryIO, filename: str,
                      fmt: str | None, mapping: dict[str, Any] | None, mode: str,
                      actor_id: int | None) -> ImportJob:
    if mode not in ("strict", "skip"):
        raise Invalid("mode must be strict or skip", details=[{"field": "mode", "message": "strict|skip"}])
    if fmt in ("", "auto"):
        fmt = None
    if fmt is not None and fmt not in FORMATS:
        raise Invalid(f"unknown format {fmt!r}", details=[{"field": "format", "message": f"one of {FORMATS}"}])
    suffix = Path(filename).suffix.lower()
    if suffix not in importing.EXTENSIONS:
        raise Invalid(f"unsupported file type {suffix or '(none)'}",
                      details=[{"field": "file", "message": f"one of {importing.EXTENSIONS}"}])
    if mapping:
        try:
            importing.parse_mapping(mapping)
        except FormatError as exc:
            raise Invalid(exc.message, details=[{"field": "mapping", "message": exc.message}]) from exc
    stored = storage.store_stream(upload, area_name="imports",
                                  max_bytes=get_settings().max_import_bytes, suffix=suffix)
    job = ImportJob(project_id=project_id, filename=filename[:500], storage_path=str(stored.path),
                    format=fmt, mapping=mapping or None, mode=mode, created_by_id=actor_id)
    db.add(job)
    db.flush()
    jobs.enqueue(db, "samples.import", job_id=job.id)
    return job


def get_import_job(db: Session, *, project_id: int, job_id: int) -> ImportJob:
    job = db.get(ImportJob, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound("import not found", code="import_not_found")
    return job


def _set(job_id: int, **values: Any) -> None:
    """Progress goes through its own short transaction so readers see it while we work."""
    with get_sessionmaker()() as s:
        job = s.get(ImportJob, job_id)
        for k, v in values.items():
            setattr(job, k, v)
        s.commit()


def run_import(job_id: int) -> dict[str, Any]:
    maker = get_sessionmaker()
    with maker() as s:
        job = s.get(ImportJob, job_id)
        if job is None:
            return {"status": "missing"}
        if job.status not in ("queued", "running"):
            return {"status": job.status}  # already done: a redelivered task is a no-op
        project_id, path, filename = job.project_id, job.storage_path, job.filename
        fmt, mapping, mode, actor = job.format, job.mapping, job.mode, job.created_by_id
    _set(job_id, status="running")

    report: list[dict[str, Any]] = []
    bad = imported = lines = 0
    db = maker()
    try:
        with open(path, "rb") as fh:
            pending: list[Sample] = []
            for item in importing.iter_records(fh, filename, fmt=fmt, mapping=mapping):
                lines = max(lines, item.line)
                if item.error is not None:
                    bad += 1
                    if len(report) < REPORT_LIMIT:
                        report.append({"line": item.line, "index": item.source_index,
                                       "code": item.error.code, "message": item.error.message})
                    continue
                if mode == "strict" and bad:
                    continue  # keep reading to report every bad line; nothing will be kept
                msgs = item.messages
                pending.append(Sample(project_id=project_id, messages=msgs,
                                      content_hash=content_hash(msgs), status="pending",
                                      source="import", import_job_id=job_id, import_line=item.line,
                                      provenance={"import": {"file": filename, "line": item.line,
                                                             "index": item.source_index}},
                                      tags=[], scores={}, version=1))
                if len(pending) >= BATCH:
                    imported += _flush(db, pending, actor)
                    _set(job_id, lines_read=lines, imported=imported, skipped=bad)
            imported += _flush(db, pending, actor)
        if mode == "strict" and bad:
            db.rollback()
            _set(job_id, status="rejected", lines_read=lines, imported=0, skipped=bad, report=report,
                 error=f"{bad} invalid record(s); nothing was imported", finished_at=utcnow())
            return {"status": "rejected", "bad": bad}
        db.commit()
        _set(job_id, status="succeeded", lines_read=lines, imported=imported, skipped=bad,
             report=report, finished_at=utcnow())
        return {"status": "succeeded", "imported": imported, "skipped": bad}
    except FormatError as exc:
        db.rollback()
        _set(job_id, status="failed", error=exc.message, finished_at=utcnow(),
             report=[{"line": 0, "code": exc.code, "message": exc.message}])
        return {"status": "failed"}
    except Exception as exc:
        db.rollback()
        log.exception("import %s failed", job_id)
        _set(job_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=utcnow())
        raise
    finally:
        db.close()


def _flush(db: Session, pending: list[Sample], actor: int | None) -> int:
    if not pending:
        return 0
    db.add_all(pending)
    db.flush()
    db.add_all([SampleRevision(sample_id=s.id, version=1, action="import", messages_before=None,
                               messages_after=s.messages, status_before=None,
                               status_after="pending", actor_id=actor) for s in pending])
    db.flush()
    n = len(pending)
    db.expunge_all()
    pending.clear()
    return n
