"""The import runner: reads an uploaded dataset file under the job kit's lease.

The samples are written in one transaction, sealed with the lease: ``strict`` rejects the whole
file when any record is invalid (the report lists every bad line), ``skip`` imports the valid
ones and reports each skipped line; either way never half. Progress is written in short
transactions of its own so readers see it while the import runs.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from sqlalchemy.orm import Session

from service.core.db import get_sessionmaker
from service.models import ImportJob, Sample, SampleRevision
from service.samples import importing
from service.samples.formats import FormatError
from service.samples.imports import BATCH, REPORT_LIMIT
from service.samples.jobs import IMPORT
from service.samples.store import message_columns
from workers import jobs as kit

log = logging.getLogger(__name__)


def run_import(job_id: int) -> dict[str, Any]:
    """Task body for ``samples.import``."""
    return kit.drive(IMPORT, job_id, _body)


def _body(lease: kit.Lease) -> dict[str, Any]:
    job_id = lease.row_id
    maker = get_sessionmaker()
    with maker() as s:
        job = s.get(ImportJob, job_id)
        project_id, path, filename = job.project_id, job.storage_path, job.filename
        fmt, mapping, mode, actor = job.format, job.mapping, job.mode, job.created_by_id
    report: list[dict[str, Any]] = []
    bad = imported = lines = 0
    size = os.path.getsize(path)
    lease.update(bytes_total=size, bytes_read=0)  # before this runner holds SQLite's one writer
    with maker() as db:
        # SQLite has one writer: while this transaction holds it, a progress write from a
        # second session would wait on it until the busy timeout (the count shows at the end)
        progress_visible = db.get_bind().dialect.name != "sqlite"
        try:
            with open(path, "rb") as fh:
                pending: list[Sample] = []
                for item in importing.iter_records(fh, filename, fmt=fmt, mapping=mapping):
                    lines = max(lines, item.line)
                    if item.error is not None:
                        bad += 1
                        if len(report) < REPORT_LIMIT:
                            report.append({"line": item.line, "index": item.source_index,
                                           "code": item.error.code,
                                           "field": item.error.field,
                                           "message": item.error.message})
                        continue
                    if mode == "strict" and bad:
                        continue  # keep reading to report every bad line; nothing will be kept
                    pending.append(Sample(
                        project_id=project_id, **message_columns(item.messages),
                        status="pending", source="import", import_job_id=job_id,
                        import_line=item.line,
                        provenance={"import": {"file": filename, "line": item.line,
                                               "index": item.source_index}},
                        tags=[], scores={}, version=1))
                    if len(pending) >= BATCH:
                        imported += _flush(db, pending, actor)
                        if progress_visible:  # how far the reader got: a bar with an ETA
                            lease.update(lines_read=lines, imported=imported, skipped=bad,
                                         bytes_read=min(size, fh.tell()))
                        lease.check()
                imported += _flush(db, pending, actor)
        except FormatError as exc:
            db.rollback()
            lease.fail(exc.message, report=[{"line": 0, "code": exc.code,
                                             "message": exc.message}])
            return {"status": "failed"}
        if mode == "strict" and bad:
            db.rollback()
            lease.finish("rejected", lines_read=lines, imported=0, skipped=bad, report=report,
                         bytes_read=size, error=f"{bad} invalid record(s); nothing was imported")
            return {"status": "rejected", "bad": bad}
        lease.seal(db, status="succeeded", lines_read=lines, imported=imported, skipped=bad,
                   report=report, bytes_read=size)
        db.commit()
    return {"status": "succeeded", "imported": imported, "skipped": bad}


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
