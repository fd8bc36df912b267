from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.jobs import JobLifecycleRead
from service.generation.llm_types import MAX_CONCURRENCY
from service.models import JobStatus, UnitStatus


class ProviderCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["openai", "local"] = "openai"
    base_url: str = Field("", max_length=500)
    model: str = Field(min_length=1, max_length=300)
    api_key: str | None = Field(None, description="write-only; stored encrypted, never returned")
    max_concurrency: int = Field(8, ge=1, le=MAX_CONCURRENCY)
    requests_per_minute: int | None = Field(None, ge=1)
    tokens_per_minute: int | None = Field(None, ge=1)
    timeout_s: float = Field(60.0, gt=0, le=3600)
    default_params: dict[str, Any] = Field(default_factory=dict)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    keep_reasoning: bool = True


class ProviderUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    base_url: str | None = Field(None, max_length=500)
    model: str | None = Field(None, min_length=1, max_length=300)
    api_key: str | None = None
    max_concurrency: int | None = Field(None, ge=1, le=MAX_CONCURRENCY)
    timeout_s: float | None = Field(None, gt=0, le=3600)
    default_params: dict[str, Any] | None = None
    extra_body: dict[str, Any] | None = None
    keep_reasoning: bool | None = None


class ProviderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int | None
    name: str
    kind: str
    base_url: str
    model: str
    has_api_key: bool = False
    max_concurrency: int
    requests_per_minute: int | None
    tokens_per_minute: int | None
    timeout_s: float
    default_params: dict[str, Any]
    extra_body: dict[str, Any]
    keep_reasoning: bool
    training_job_id: int | None = Field(None, description=(
        "set when the provider is a training job's fine-tuned model "
        "(POST /training-jobs/{id}/provider)"))
    created_at: datetime


class TemplateCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["question", "answer", "instruction", "dialogue", "keywords", "custom", "judge",
                  # the steps of the diversity jobs (service/diversity/steps.py)
                  "domain_tree", "domain_tag", "ga_pairs", "topic_expand", "topic_questions",
                  "topic_answer"]
    lang: str = Field("en", max_length=10)
    text: str = Field(min_length=1, max_length=100_000)
    parser: dict[str, Any] = Field(default_factory=lambda: {"kind": "text"},
                                   description='{"kind": "json"|"regex"|"text"|"qa_list", ...options}')


class TemplateRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    project_id: int | None
    name: str
    kind: str
    lang: str
    version: int
    text: str
    parser: dict[str, Any]
    created_at: datetime


class TemplatePreview(BaseModel):
    chunk_id: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    text: str | None = Field(None, min_length=1, max_length=100_000, description=(
        "the text being edited: rendered (and checked as a save would) instead of the saved "
        "version"))


class TemplateRendered(BaseModel):
    chunk_id: int | None = Field(description="the chunk rendered (the project's first when none "
                                             "was named; null: the project has none)")
    rendered: str


class ProviderTest(BaseModel):
    """Whether the provider answers: its model list, else a one-token chat (``method``); for the
    in-worker model, only whether its weights are where the worker looks."""
    ok: bool
    method: Literal["models", "chat"] | None = None
    models: list[str] | None = Field(None, description="the models the endpoint lists")
    model_listed: bool | None = None
    latency_s: float | None = None
    error: str | None = None
    status_code: int | None = Field(None, description="the endpoint's HTTP status on failure")
    model: str | None = Field(None, description="the in-worker model checked")
    note: str | None = None


class JobCreate(BaseModel):
    template_id: int
    provider_id: int
    document_ids: list[int] | None = None
    chunk_ids: list[int] | None = None
    unused_only: bool = Field(True, description="skip chunks this template version already used")
    samples_per_chunk: int = Field(1, ge=1, le=100)
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "n (questions per chunk; default from chunk length), rounds, user_role, assistant_role, "
        "scenario, system_prompt, answer_template_id, sampling {temperature, max_tokens, ...}, "
        "variables {name: value} (those a template's header declares), keep_truncated (an "
        "answer cut off by max_tokens is kept, tagged 'truncated', instead of retried with "
        "twice the budget and failed)"))
    workers: int = Field(1, ge=1, le=16, description="parallel runners (across worker processes)")


class JobRead(JobLifecycleRead):
    default_queue: ClassVar[str] = "generate"
    id: int
    project_id: int
    kind: str
    template_id: int
    provider_id: int
    params: dict[str, Any]
    chunk_filter: dict[str, Any]
    samples_per_chunk: int
    status: JobStatus
    total_units: int
    done_units: int
    failed_units: int
    retried: int = Field(description="requests repeated after a failure or a cut-off answer, "
                         "and unit re-runs: the sum of the units' retries")
    repairs: int = Field(0, description="repair rounds (an answer sent back to be fixed)")
    requests: int = Field(0, description="chat requests sent, every attempt included")
    prompt_tokens: int
    completion_tokens: int
    failure_reasons: dict[str, int] | None = Field(None, description=(
        "failed units by reason (error_code), on GET of one job"))
    created_at: datetime


class ProviderUsage(BaseModel):
    jobs: int
    requests: int
    retried: int
    repairs: int
    prompt_tokens: int
    completion_tokens: int


class UnitRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    key: str
    chunk_id: int | None
    index: int
    status: UnitStatus
    attempts: int
    sample_id: int | None
    raw_output: str | None
    error: str | None
    requests: int = 0
    retries: int = 0
    repairs: int = 0
    error_code: str | None = Field(None, description=(
        "why the unit failed: truncated, parse_failed, wrong_shape, invalid_sample, "
        "template_error, llm_<kind> (rate_limit, server, timeout, ...), worker_died"))
    prompt_tokens: int
    completion_tokens: int
    latency_ms: int
