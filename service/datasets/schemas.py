from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.core.jobs import JobLifecycleRead
from service.models import BuildStatus, ExportStatus, SampleStatus

SPLITS: tuple[str, ...] = ("train", "validation", "test")
EXPORT_FORMATS: tuple[str, ...] = ("alpaca", "sharegpt", "openai", "hf")
ExportFormat = Literal["alpaca", "sharegpt", "openai", "hf"]
TextFormat = Literal["alpaca", "sharegpt", "openai"]


class DatasetCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)
    default_format: TextFormat = "openai"


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    name: str
    description: str
    default_format: str
    created_at: datetime


class ScoreRange(BaseModel):
    key: str = Field(min_length=1, max_length=100, description="a key of Sample.scores")
    min: float | None = Field(None, allow_inf_nan=False, description="a finite number; none: no lower bound")
    max: float | None = Field(None, allow_inf_nan=False, description="a finite number; none: no upper bound")

    @model_validator(mode="after")
    def _ordered(self) -> ScoreRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class VersionFilter(BaseModel):
    """Which samples a version takes. Every given criterion must hold (tags: any of them)."""

    model_config = ConfigDict(extra="forbid")
    status: list[SampleStatus] = Field(default_factory=lambda: [SampleStatus.accepted], min_length=1)
    tags: list[str] | None = Field(None, description="samples with at least one of these tags")
    document_ids: list[int] | None = None
    domain_leaf_ids: list[int] | None = Field(None, description="samples tagged with one of these "
                                                                "leaves of the domain tree")
    score: ScoreRange | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    @field_validator("status")
    @classmethod
    def _unique_status(cls, v: list[SampleStatus]) -> list[SampleStatus]:
        return sorted(set(v), key=lambda s: s.value)


class SplitRatios(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitRatios:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must sum to 1 (got {total:g})")
        return self


class VersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filter: VersionFilter = Field(default_factory=VersionFilter)
    split: SplitRatios = Field(default_factory=SplitRatios)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    stratify_by: Literal["document", "domain_leaf"] | None = Field(None, description=(
        "document: whole documents per split; domain_leaf: each leaf of the domain tree split "
        "in the ratios (untagged samples as one group)"))
    reasoning: Literal["omit", "think"] = Field(
        "omit", description="think: each sample's reasoning goes into its last assistant turn as "
                            "<think>…</think> before the answer (for reasoning models)")


class VersionRead(JobLifecycleRead):
    id: int
    dataset_id: int
    project_id: int
    number: int
    status: BuildStatus
    filter: dict[str, Any]
    split: dict[str, float]
    seed: int
    stratify_by: str | None
    reasoning: str
    counts: dict[str, int]
    progress_done: int = Field(0, description="selected samples the build has frozen so far")
    progress_total: int | None = Field(None, description="samples the filter selected")
    stats: dict[str, Any]
    leakage: list[dict[str, Any]]
    error: str | None
    created_at: datetime
    built_at: datetime | None


class ExportCreate(BaseModel):
    format: ExportFormat


class ExportRead(JobLifecycleRead):
    id: int
    version_id: int
    format: str
    status: ExportStatus
    progress: int
    files: dict[str, Any]
    manifest_sha256: str | None
    error: str | None
    created_at: datetime


class DiffChange(BaseModel):
    sample_id: int
    split_a: str
    split_b: str
    sample_version_a: int
    sample_version_b: int
    diff: str


class SplitChange(BaseModel):
    sample_id: int
    from_split: str
    to_split: str


class DiffItem(BaseModel):
    sample_id: int
    split: str


class VersionDiff(BaseModel):
    a: int
    b: int
    summary: dict[str, int]
    added: list[DiffItem]
    removed: list[DiffItem]
    changed: list[DiffChange]
    split_changes: list[SplitChange]
    truncated: bool
