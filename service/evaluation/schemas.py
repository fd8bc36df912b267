from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.models import JobStatus

DEFAULT_RUN_METRICS = ["exact_match", "bleu-4", "rouge", "char_f1"]


class GenerationSettings(BaseModel):
    """How the model under test generates. Greedy (temperature 0) by default."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1, le=32768)
    seed: int | None = None
    extra_body: dict[str, Any] = Field(default_factory=dict, description=(
        'merged into every request to an endpoint, e.g. {"chat_template_kwargs": '
        '{"enable_thinking": false}}; local models pass chat_template_kwargs to the chat template'))
    batch_size: int = Field(8, ge=1, le=256, description="prompts per forward pass (local models)")


class EvalRunCreate(BaseModel):
    name: str = Field("", max_length=200)
    dataset_version_id: int
    split: Literal["train", "validation", "test"] = "test"
    model_kind: Literal["base", "adapter", "endpoint"] = Field(..., description=(
        "base: base_model as is; adapter: the adapter of a succeeded training job on its base; "
        "endpoint: a provider (provider_id): an OpenAI-compatible endpoint, or a local provider, "
        "which runs in the gpu worker and is stored as the local run it stands for (a training "
        "job's registered model: model_kind=adapter of that job; else its model as a base)"))
    base_model: str | None = Field(None, max_length=500, description=(
        "for model_kind=base: smollm2-135m-instruct, a local model folder or a .gguf file"))
    training_job_id: int | None = Field(None, description="for model_kind=adapter")
    provider_id: int | None = Field(None, description="for model_kind=endpoint")
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_RUN_METRICS), min_length=1,
                               max_length=20, description="metric names or outputs (rouge-l)")
    metric_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        'per-metric options, e.g. {"keywords": {"separators": [";", "，"]}}'))


class EvalRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int
    dataset_version_id: int
    split: str
    name: str
    model_kind: str
    base_model: str | None
    training_job_id: int | None
    provider_id: int | None
    generation: dict[str, Any]
    metrics: list[str]
    metric_options: dict[str, Any]
    status: JobStatus
    cancel_requested: bool
    attempts: int
    total: int
    done: int
    failed: int
    aggregate: dict[str, Any]
    error: str | None
    created_at: datetime
    sent_at: datetime | None = Field(None, description=(
        "when the broker accepted the run's message; null: not yet (workers re-send it)"))
    started_at: datetime | None = None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class EvalRunsPage(BaseModel):
    items: list[EvalRunRead]
    next_cursor: str | None = None
    compare_url: str | None = Field(None, description=(
        "with ?training_job_id=: the comparison of its base and adapter runs, once both exist"))


class EvalPredictionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    run_id: int
    item_id: int
    sample_id: int
    prompt: list[dict[str, Any]]
    prediction: str | None
    reference: str
    scores: dict[str, Any]
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
    created_at: datetime


class MetricRead(BaseModel):
    name: str
    outputs: list[str]
    kind: str
    higher_is_better: bool | None
    scale: float | None
    description: str


class RunMeans(BaseModel):
    """A compared run: its mean per metric over the items it scored."""
    id: int
    n_samples: int
    means: dict[str, float]
    name: str
    model_kind: str
    model: str
    status: JobStatus
    total: int
    done: int
    failed: int


class MetricComparison(BaseModel):
    """A candidate against the baseline on one metric, over the items both scored: the paired
    bootstrap's delta and interval; win/tie/loss (null for a descriptive metric)."""
    baseline_mean: float
    mean: float
    delta: float
    ci_low: float
    ci_high: float
    n: int
    p_worse: float = Field(description="the share of resampled deltas <= 0")
    win: int | None
    tie: int | None
    loss: int | None


class RunComparison(BaseModel):
    id: int
    metrics: dict[str, MetricComparison]


class SampleComparison(BaseModel):
    """One item: the worst candidate's delta on ``sort_metric`` and every run's score."""
    sample: str = Field(description="the dataset version item id")
    delta: float
    scores: dict[int, float] = Field(description="per run id")
    predictions: dict[int, str] = Field(default_factory=dict, description="per run id")
    reference: str | None = None
    prompt: str
    sample_id: int | None
    item_id: int | None


class EvalComparison(BaseModel):
    baseline: int
    metrics: list[str]
    confidence: float
    n_resamples: int
    seed: int | None
    runs: list[RunMeans]
    comparisons: list[RunComparison]
    sort_metric: str | None
    per_sample: list[SampleComparison] = Field(description="largest regression first")
    dataset_version_id: int
    split: str
    higher_is_better: dict[str, bool | None]
    compare_url: str
