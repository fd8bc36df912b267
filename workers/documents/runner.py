"""The parse runner: parses and chunks one uploaded document under the job kit's lease.

The document's text and chunks are stored in one transaction sealed with the lease (status
``parsed``), so a worker killed mid-parse leaves the document ``parsing`` with a stale heartbeat,
which the sweeper re-queues, or fails with the reason once its attempts are spent (a file that
kills its parser every time). A failure marks only this document, with a reason.

While it parses, the runner writes how far it has got (``Document.progress_total``: pages of a
PDF, chapters of an EPUB, ...; ``progress_done``) so the Documents page shows a bar with an ETA
(``service/static/jobs_live.js``). The parsers report every unit through one callback
(``parsing.Progress``); :class:`ProgressWriter` turns that into a write every few pages, each
in a short transaction of its own fenced by the lease (``Lease.update``), never one per page:
a real PDF parses at hundreds of pages a second.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from service.core.db import get_sessionmaker
from service.core.errors import AppError
from service.documents import parsing
from service.documents import service as documents_service
from service.documents.jobs import PARSE
from workers import jobs as kit

log = logging.getLogger(__name__)

# a progress write at most this often (seconds) ...
PROGRESS_MIN_SECONDS = 0.5
# ... and only once at least this share of the total has been parsed since the last one
PROGRESS_MIN_SHARE = 0.02


def parse(document_id: int) -> dict[str, Any]:
    """Task body for ``documents.parse``."""
    return kit.drive(PARSE, document_id, _body)


class ProgressWriter:
    """``on_progress`` for ``parsing.parse_document``: writes ``progress_done``/``_total``
    through ``write`` (the lease's short transaction) when the total is first known or changes,
    and then at most every ``min_seconds`` and every ``min_share`` of the total, so a 5,000-page
    PDF costs a few dozen writes and a 3-page one just the first. The final count is written
    with the parse's result (``Lease.seal``). ``write`` returning False (the lease is lost: the
    sweeper gave the row to another runner) stops the parse with :class:`kit.LeaseLost`.
    """

    def __init__(self, write: Callable[..., bool], *, min_seconds: float = PROGRESS_MIN_SECONDS,
                 min_share: float = PROGRESS_MIN_SHARE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write = write
        self.min_seconds = min_seconds
        self.min_share = min_share
        self.clock = clock
        self.seen: tuple[int, int] | None = None  # (done, total) last reported by the parse
        self.written: tuple[int, int] | None = None  # ... and last written
        self.at = 0.0
        self.writes = 0

    def __call__(self, done: int, total: int) -> None:
        self.seen = (done, total)
        last = self.written
        if last is not None and last[1] == total:
            step = max(1, math.ceil(total * self.min_share))
            if done - last[0] < step or self.clock() - self.at < self.min_seconds:
                return
        self.flush(done, total)

    def flush(self, done: int, total: int) -> None:
        if not self.write(progress_done=done, progress_total=total):
            raise kit.LeaseLost(f"document {done}/{total}")
        self.written, self.at = (done, total), self.clock()
        self.writes += 1


def _body(lease: kit.Lease) -> dict[str, Any]:
    with get_sessionmaker()() as db:
        path, filename, ctype = documents_service.source_of(db, lease.row_id)
    progress = ProgressWriter(lease.update, min_seconds=PROGRESS_MIN_SECONDS,
                              min_share=PROGRESS_MIN_SHARE)
    try:
        parsed = parsing.parse_document(path, filename=filename, content_type=ctype,
                                        on_progress=progress)
    except parsing.ParseError as exc:
        lease.fail(exc.reason)
        return {"status": "failed", "error": exc.reason}
    except kit.LeaseLost:
        raise
    except Exception as exc:  # a parser bug must not take the worker down or hide the reason
        log.exception("parsing document %s failed", lease.row_id)
        reason = f"could not parse the file ({type(exc).__name__})"
        lease.fail(reason)
        return {"status": "failed", "error": reason}
    total = progress.seen[1] if progress.seen else 1  # parse_document ends at total of total
    with get_sessionmaker()() as db:
        try:
            n = documents_service.store_parsed(db, lease.row_id, parsed)
        except AppError as exc:
            db.rollback()
            lease.fail(f"chunking settings: {exc.message}")
            return {"status": "failed", "error": exc.message}
        lease.seal(db, status="parsed", progress_done=total, progress_total=total)
        db.commit()
    return {"status": "parsed", "chunks": n, "progress_writes": progress.writes}
