"""Dataset imports: the upload is stored, then a task (``workers/samples/runner.py``) parses it
as one transaction.

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
from service.core.errors import Invalid
from service.core.lookup import get_in_project
from service.models import ImportJob
from service.samples import importing
from service.samples.formats import FORMATS, FormatError
from service.samples.jobs import IMPORT

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
    jobs.enqueue(db, IMPORT, job)
    return job


def get_import_job(db: Session, *, project_id: int, job_id: int) -> ImportJob:
    return get_in_project(db, ImportJob, job_id, project_id=project_id, what="import",
                          code="import_not_found")
