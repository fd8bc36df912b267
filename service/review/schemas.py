from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.models import BulkStatus
from service.samples.schemas import FilterSpec, Messages, SampleRead

Decision = Literal["accepted", "rejected", "needs_changes"]


class DecisionCreate(BaseModel):
    decision: Decision
    version: int = Field(description="the sample version the reviewer started from")
    reason: str | None = Field(None, max_length=5000)
    messages: Messages | None = Field(
        None, description="the edited conversation, when the reviewer changed it")


class DecisionResult(BaseModel):
    sample: SampleRead
    resolved: bool
    flagged: bool
    decisions: int


class DecisionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    sample_id: int
    reviewer_id: int
    decision: str
    reason: str | None
    messages: list[dict[str, str]] | None
    sample_version: int
    created_at: datetime


class NextSample(BaseModel):
    sample: SampleRead | None


class SkipResult(BaseModel):
    skipped: list[int]
    next: SampleRead | None


class AssignRequest(BaseModel):
    filter: FilterSpec = Field(default_factory=FilterSpec)
    annotator_ids: list[int] = Field(default_factory=list, max_length=1000)
    mode: Literal["round_robin", "count"] = "round_robin"
    count: int | None = Field(None, ge=1, le=1_000_000, description="samples per annotator")
    dry_run: bool = False


class ReviewSettingsRead(BaseModel):
    reject_reasons: list[str]
    target_accepted: int | None
    review_overlap: int


class ReviewSettingsUpdate(BaseModel):
    reject_reasons: list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=50)
    target_accepted: int | None = Field(None, ge=1)
    clear_target: bool = False
    review_overlap: int | None = Field(None, ge=1, le=10)


class ReviewerThroughput(BaseModel):
    reviewer_id: int
    email: str | None
    per_day: dict[str, int] = Field(description="decisions per day (YYYY-MM-DD)")
    total: int
    per_active_day: float


class ThroughputRead(BaseModel):
    days: list[str] = Field(description="the days with any decision, oldest first")
    reviewers: list[ReviewerThroughput]


class ProgressRead(BaseModel):
    counts: dict[str, int] = Field(description="samples per status")
    total: int
    target_accepted: int | None
    accepted: int
    percent: float | None = Field(description="accepted of the target, capped at 100")


class BulkChangeResult(BaseModel):
    """A bulk change done within the request (200), or only counted (``dry_run``: no
    ``unchanged``/``skipped``)."""
    matching: int = Field(description="samples the filter selects")
    changed: int
    unchanged: int | None = Field(None, description="already as asked")
    skipped: int | None = Field(None, description="edited by someone else meanwhile: left as is")
    dry_run: bool


class AssignResult(BaseModel):
    """An assignment done within the request (200), or only planned (``dry_run``)."""
    matching: int = Field(description="samples selected (up to count per annotator)")
    per_annotator: dict[str, int] = Field(description="samples per annotator id")
    changed: int
    dry_run: bool


class BulkJobRead(BaseModel):
    """A bulk change or assignment running as a background task (above
    ``review_bulk.TASK_THRESHOLD`` samples)."""
    id: str
    project_id: int
    kind: Literal["change", "assign"]
    status: BulkStatus
    matching: int | None
    processed: int
    changed: int
    unchanged: int
    skipped: int
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    done: bool
    per_annotator: dict[str, int] | None = None


class BulkJobStarted(BulkJobRead):
    """The 202 answer when a bulk change or assignment starts as a task: poll ``status_url``."""
    job_id: str
    dry_run: bool = False
    status_url: str


class PairAgreement(BaseModel):
    a: int
    b: int
    a_email: str | None
    b_email: str | None
    items: int
    agreement: float
    cohen_kappa: float | None
    edit_distance: float | None


class ReviewerAgreement(BaseModel):
    reviewer_id: int
    email: str | None
    agreement: float
    items: int


class ReviewAgreement(BaseModel):
    items: int = Field(description="samples decided by two or more reviewers")
    raters: int | None = Field(description="the usual number of reviewers per such sample")
    fleiss_kappa: float | None
    pairs: list[PairAgreement]
    reviewers: list[ReviewerAgreement]
