"""Dataset runners: a version's build and an export's write, each under the job kit's lease.

A build (or an export) writes in one transaction and seals it with the lease (``Lease.seal``):
a worker killed mid-build leaves nothing half-written and the row ``building`` with a stale
heartbeat, which the sweeper re-queues (a retried build starts from scratch) or fails with the
reason once its attempts are spent. The heartbeat thread keeps a long build's row alive.
"""
from __future__ import annotations

from typing import Any

from service.core.db import get_sessionmaker
from service.datasets import export as datasets_export
from service.datasets import service as datasets_service
from service.datasets.jobs import BUILD, EXPORT
from workers import jobs as kit


def build_version(version_id: int) -> dict[str, Any]:
    """Task body for ``datasets.build_version``."""
    return kit.drive(BUILD, version_id, _build)


def _build(lease: kit.Lease) -> dict[str, Any]:
    maker = get_sessionmaker()
    with maker() as db, maker() as snapshot:
        postgres = db.get_bind().dialect.name == "postgresql"
        if postgres:
            # one snapshot for every pass of the selection, in a session of its own: the items
            # and the version row are written through ``db`` (read committed), so the row's
            # heartbeat and progress, written meanwhile, do not fail its final write (under
            # REPEATABLE READ, "could not serialize access due to concurrent update")
            snapshot.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        selected: list[int] = []

        # SQLite has one writer: while the build holds it, a progress write from a second
        # session would wait on it until the busy timeout (the count shows at the end)
        reporter = kit.Progress(lease) if postgres else None

        def progress(done: int, total: int) -> None:
            selected[:] = [total]
            if reporter is not None:  # a cancelled or lost build stops between batches
                reporter.report(progress_done=done, progress_total=total)

        try:
            try:
                version = datasets_service.build_version(db, lease.row_id, on_progress=progress,
                                                         read=snapshot if postgres else None)
            finally:
                if reporter is not None:
                    reporter.close()
        except datasets_service.Unexportable as exc:
            db.rollback()  # nothing frozen; the version says which samples and why
            lease.fail(str(exc), stats={"refused": exc.refused, "refused_total": exc.total})
            return {"status": "failed", "refused": exc.total}
        total = selected[0] if selected else int((version.counts or {}).get("total", 0))
        lease.seal(db, progress_done=total, progress_total=total)
        counts = dict(version.counts or {})
        db.commit()
    return {"status": "ready", "counts": counts}


def export_version(export_id: int) -> dict[str, Any]:
    """Task body for ``datasets.export_version`` (also run in-process by the training runner)."""
    return kit.drive(EXPORT, export_id, _export)


def _export(lease: kit.Lease) -> dict[str, Any]:
    def progress(pct: int) -> None:
        lease.update(progress=max(0, min(100, pct)))
        lease.check()  # a lost lease stops the write; the staging folder is removed

    with get_sessionmaker()() as db:
        datasets_export.write_export(db, lease.row_id, on_progress=progress)
        lease.seal(db)
        db.commit()
    return {"status": "ready"}
