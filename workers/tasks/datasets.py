"""Dataset tasks: build a version, write an export. Thin shells over service.datasets."""
from __future__ import annotations

import logging

from celery import shared_task

from service.core.db import session_scope
from service.datasets import export as datasets_export
from service.datasets import service as datasets_service

log = logging.getLogger(__name__)


@shared_task(name="datasets.build_version")
def build_version(version_id: int) -> str:
    with session_scope() as db:
        if not datasets_service.claim_version(db, version_id):
            return "skipped"
    try:
        with session_scope() as db:
            if db.get_bind().dialect.name == "postgresql":
                # one snapshot for every pass of the build
                db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            datasets_service.build_version(db, version_id)
    except Exception as exc:
        log.exception("building dataset version %s failed", version_id)
        with session_scope() as db:
            datasets_service.fail_version(db, version_id, f"{exc.__class__.__name__}: {exc}")
        return "failed"
    return "ready"


@shared_task(name="datasets.export_version")
def export_version(export_id: int) -> str:
    with session_scope() as db:
        if not datasets_service.claim_export(db, export_id):
            return "skipped"

    def progress(pct: int) -> None:
        with session_scope() as pdb:
            datasets_service.set_export_progress(pdb, export_id, pct)

    try:
        with session_scope() as db:
            datasets_export.write_export(db, export_id, on_progress=progress)
    except Exception as exc:
        log.exception("export %s failed", export_id)
        with session_scope() as db:
            datasets_service.fail_export(db, export_id, f"{exc.__class__.__name__}: {exc}")
        return "failed"
    return "ready"
