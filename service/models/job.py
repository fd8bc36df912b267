"""The lifecycle every background job row shares: one mixin, one set of status words.

A job row (a generation job, a training job, an evaluation run, a dataset build or export, an
import, a bulk change, a document parse) is driven by the job kit in ``workers/jobs.py``:

* ``attempts``: how many times a runner claimed it (a cap turns a job that keeps killing its
  workers into ``failed`` with a reason instead of a loop);
* ``lease_token``: the fencing token of the runner that holds it; every write of a runner is
  ``UPDATE ... WHERE lease_token = <mine>``, so a runner that lost its lease writes nothing;
* ``heartbeat_at``: renewed by the runner's heartbeat thread while it works (not after a batch),
  so the sweeper resumes exactly the jobs whose runner is gone;
* ``sent_at``: when the broker accepted the job's message (NULL: never, the sweepers re-send);
* ``cancel_requested``: set by a user; runners read it between units and inside long loops;
* ``worker``: host and process of the runner holding the lease, shown on the job's page;
* ``queue``: the queue the job was sent to, when it is not its kind's usual one (a generation
  job with the in-worker model runs on ``gpu`` with the other heavy local work).

Tables keep their own word for a state where the product already shows one (a version is
``building`` and then ``ready``, a document ``parsing`` and then ``parsed``); the job kit's
registry maps those words onto :class:`JobStatus`. Each table's words are a ``StrEnum`` here
(``STATUS_ENUMS``), shared by the API's schemas and the pages; the column stays a string.
"""
from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import UTCDateTime


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    paused = "paused"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class DocumentStatus(StrEnum):
    """A document: stored, then parsed (and chunked) by ``documents.parse``."""
    uploaded = "uploaded"
    parsing = "parsing"
    parsed = "parsed"
    failed = "failed"


class BuildStatus(StrEnum):
    """A frozen version (of a dataset, of preference data) being built."""
    queued = "queued"
    building = "building"
    ready = "ready"
    failed = "failed"


class ExportStatus(StrEnum):
    """A dataset version's export in one format."""
    queued = "queued"
    running = "running"
    ready = "ready"
    failed = "failed"


class ImportStatus(StrEnum):
    """A file of samples being imported; ``rejected``: strict mode met a bad line."""
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    rejected = "rejected"
    failed = "failed"


class TrainingStatus(StrEnum):
    """A training job; ``validating``: its dataset and settings are being checked."""
    validating = "validating"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class BulkStatus(StrEnum):
    """A bulk change or assignment running as a task."""
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class UnitStatus(StrEnum):
    """One unit of work (a chunk and a sample index) of a generation job."""
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


# the words each job table's ``status`` holds (strings in the database; the API, the schemas and
# the pages use these enums); tests/test_openapi.py checks every JobKind's words against them
STATUS_ENUMS: dict[str, type[StrEnum]] = {
    "documents": DocumentStatus,
    "dataset_versions": BuildStatus,
    "preference_versions": BuildStatus,
    "dataset_exports": ExportStatus,
    "import_jobs": ImportStatus,
    "training_jobs": TrainingStatus,
    "bulk_jobs": BulkStatus,
    "generation_jobs": JobStatus,
    "eval_runs": JobStatus,
    "diversity_jobs": JobStatus,
    "preference_generation_jobs": JobStatus,
    "preference_eval_runs": JobStatus,
}


def status_enum(table: str) -> type[StrEnum]:
    """The status words of a job table (``JobStatus`` unless it has words of its own)."""
    return STATUS_ENUMS.get(table, JobStatus)


class JobMixin:
    """Lifecycle columns of a job row (see the module docstring)."""

    status: Mapped[str] = mapped_column(String(20), default=JobStatus.queued.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(36))
    worker: Mapped[str | None] = mapped_column(String(200))
    queue: Mapped[str | None] = mapped_column(String(20))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
