from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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
