from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.core.jobs import JobLifecycleRead
from service.models import ImportStatus, SampleStatus

Status = SampleStatus
# caps documented in the schema (the input layer in service/core/sanitize.py is the backstop)
MAX_TAGS = 100
MAX_MESSAGES = 1000
MAX_FILTER_IDS = 100_000


def _not_blank(tag: str) -> str:
    if not tag.strip():
        raise ValueError("a tag must not be empty or only whitespace")
    return tag


Tag = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_not_blank)]
Tags = Annotated[list[Tag], Field(max_length=MAX_TAGS)]
Messages = Annotated[list[dict[str, Any]], Field(max_length=MAX_MESSAGES)]


class SampleSort(StrEnum):
    """The orders samples are listed (and queued for review) in; ``-``: descending."""
    id = "id"
    id_desc = "-id"
    updated_at = "updated_at"
    updated_at_desc = "-updated_at"
    created_at = "created_at"
    created_at_desc = "-created_at"


class Message(BaseModel):
    role: str
    content: str


class SampleCreate(BaseModel):
    messages: Messages
    tags: Tags = Field(default_factory=list)
    reasoning: str | None = Field(None, max_length=200_000)
    status: Status = "pending"
    document_id: int | None = Field(None, description=(
        "the document of this project the sample comes from (kept for document-stratified "
        "splits and leakage checks)"))
    chunk_id: int | None = Field(None, description="its chunk; implies the document")


class SampleUpdate(BaseModel):
    version: int | None = Field(None, description="the version the edit started from (or If-Match)")
    messages: Messages | None = None
    tags: Tags | None = None
    reasoning: str | None = Field(None, max_length=200_000)
    comment: str | None = Field(None, max_length=5000)


class StatusChange(BaseModel):
    version: int | None = None
    status: Status
    reason: str | None = Field(None, max_length=5000)


class SampleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    messages: list[dict[str, str]]
    reasoning: str | None
    status: SampleStatus
    version: int
    source: str
    tags: list[str]
    scores: dict[str, Any]
    provenance: dict[str, Any]
    chunk_id: int | None
    document_id: int | None
    generation_job_id: int | None
    domain_leaf_id: int | None = None
    import_job_id: int | None
    import_line: int | None
    assignee_id: int | None
    reviewed_by_id: int | None
    reviewed_at: datetime | None
    reject_reason: str | None
    created_at: datetime
    updated_at: datetime


class RevisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    version: int
    action: str
    messages_before: list[dict[str, str]] | None
    messages_after: list[dict[str, str]]
    status_before: SampleStatus | None
    status_after: SampleStatus
    actor_id: int | None
    comment: str | None
    created_at: datetime


class FilterSpec(BaseModel):
    status: list[Status] = Field(default_factory=list)
    tag: str | None = Field(None, max_length=200)
    document_id: int | None = None
    generation_job_id: int | None = None
    import_job_id: int | None = None
    assignee_id: int | None = None
    unassigned: bool = False
    reviewer_id: int | None = None
    q: str | None = Field(None, max_length=1000)
    score_key: str | None = Field(None, max_length=200)
    score_min: float | None = None
    score_max: float | None = None
    ids: list[int] | None = Field(None, max_length=MAX_FILTER_IDS)
    domain_leaf_id: int | None = Field(None, description="samples tagged with this leaf of the "
                                                         "domain tree")


class BulkAction(BaseModel):
    filter: FilterSpec
    status: Status | None = None
    add_tags: Tags = Field(default_factory=list)
    remove_tags: Tags = Field(default_factory=list)
    assignee_id: int | None = None
    unassign: bool = False
    dry_run: bool = Field(False, description="only count what would change")


class ImportRead(JobLifecycleRead):
    id: int
    filename: str
    format: str | None
    mapping: dict[str, Any] | None
    mode: str
    status: ImportStatus
    lines_read: int
    bytes_read: int = Field(0, description="how far the import has read its file (progress)")
    bytes_total: int | None = Field(None, description="the file's size, once the import started")
    imported: int
    skipped: int
    report: list[dict[str, Any]]
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class TokenSummary(BaseModel):
    """Token counts over samples (``service/samples/tokens.py:summarize``); ``None`` when there
    are none."""
    min: int | None
    mean: float | None
    p95: int | None = Field(description="the nearest-rank 95th percentile")
    max: int | None
    count: int


class TokenStats(BaseModel):
    tokenizer: str
    total: TokenSummary = Field(description="tokens of each whole conversation")
    assistant: TokenSummary = Field(description="tokens of each conversation's assistant turns")


class SampleStats(BaseModel):
    status_counts: dict[str, int] = Field(description="samples per status")
    tokens: TokenStats
