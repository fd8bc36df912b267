"""The parse runner: parses and chunks one uploaded document under the job kit's lease.

The document's text and chunks are stored in one transaction sealed with the lease (status
``parsed``), so a worker killed mid-parse leaves the document ``parsing`` with a stale heartbeat,
which the sweeper re-queues, or fails with the reason once its attempts are spent (a file that
kills its parser every time). A failure marks only this document, with a reason.
"""
from __future__ import annotations

import logging
from typing import Any

from service.core.db import get_sessionmaker
from service.core.errors import AppError
from service.documents import parsing
from service.documents import service as documents_service
from service.documents.jobs import PARSE
from workers import jobs as kit

log = logging.getLogger(__name__)


def parse(document_id: int) -> dict[str, Any]:
    """Task body for ``documents.parse``."""
    return kit.drive(PARSE, document_id, _body)


def _body(lease: kit.Lease) -> dict[str, Any]:
    with get_sessionmaker()() as db:
        path, filename, ctype = documents_service.source_of(db, lease.row_id)
    try:
        parsed = parsing.parse_document(path, filename=filename, content_type=ctype)
    except parsing.ParseError as exc:
        lease.fail(exc.reason)
        return {"status": "failed", "error": exc.reason}
    except Exception as exc:  # a parser bug must not take the worker down or hide the reason
        log.exception("parsing document %s failed", lease.row_id)
        reason = f"could not parse the file ({type(exc).__name__})"
        lease.fail(reason)
        return {"status": "failed", "error": reason}
    with get_sessionmaker()() as db:
        try:
            n = documents_service.store_parsed(db, lease.row_id, parsed)
        except AppError as exc:
            db.rollback()
            lease.fail(f"chunking settings: {exc.message}")
            return {"status": "failed", "error": exc.message}
        lease.seal(db, status="parsed")
        db.commit()
    return {"status": "parsed", "chunks": n}
