from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, JSONType, UTCDateTime, utcnow
from service.models.job import JobMixin


class LLMProvider(Base):
    """An OpenAI-compatible endpoint (or the in-worker local model). The key is encrypted."""

    __tablename__ = "llm_providers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), default="openai")  # openai|local
    base_url: Mapped[str] = mapped_column(String(500), default="")
    model: Mapped[str] = mapped_column(String(300))
    api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    max_concurrency: Mapped[int] = mapped_column(Integer, default=8)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    timeout_s: Mapped[float] = mapped_column(Float, default=60.0)
    default_params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    extra_body: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    keep_reasoning: Mapped[bool] = mapped_column(Boolean, default=True)
    # a local provider registered from a succeeded training job: its model is the job's merged
    # folder or adapter (round two: the fine-tuned model drafts and is evaluated)
    training_job_id: Mapped[int | None] = mapped_column(
        ForeignKey("training_jobs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PromptTemplate(Base):
    __tablename__ = "prompt_templates"
    __table_args__ = (UniqueConstraint("project_id", "name", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # question|answer|instruction|dialogue|custom|judge
    lang: Mapped[str] = mapped_column(String(10), default="en")
    version: Mapped[int] = mapped_column(Integer, default=1)
    text: Mapped[str] = mapped_column(Text)
    parser: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GenerationJob(JobMixin, Base):
    __tablename__ = "generation_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    template_id: Mapped[int] = mapped_column(ForeignKey("prompt_templates.id", ondelete="RESTRICT"))
    provider_id: Mapped[int] = mapped_column(ForeignKey("llm_providers.id", ondelete="RESTRICT"))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    chunk_filter: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    samples_per_chunk: Mapped[int] = mapped_column(Integer, default=1)
    total_units: Mapped[int] = mapped_column(Integer, default=0)
    done_units: Mapped[int] = mapped_column(Integer, default=0)
    failed_units: Mapped[int] = mapped_column(Integer, default=0)
    # counters: each is the sum (or count) of the units' own figures (``_close`` recounts)
    retried: Mapped[int] = mapped_column(Integer, default=0)
    repairs: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(BigId, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigId, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigId, default=0)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GenerationUnit(Base):
    """One unit of work (chunk × template version × index) with a deterministic key."""

    __tablename__ = "generation_units"
    __table_args__ = (
        UniqueConstraint("key"),
        Index("ix_generation_units_job_id_status", "job_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("generation_jobs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    chunk_id: Mapped[int | None] = mapped_column(ForeignKey("chunks.id", ondelete="SET NULL"), index=True)
    index: Mapped[int] = mapped_column(Integer, default=0)
    # a genre–audience fan-out: the pair this unit asks in (``GAPair``; kept if the pair goes)
    ga_pair_id: Mapped[int | None] = mapped_column(BigId)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending|running|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sample_id: Mapped[int | None] = mapped_column(ForeignKey("samples.id", ondelete="SET NULL"), index=True)
    raw_output: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # why the unit failed, for the job's summary: truncated, parse_failed, wrong_shape,
    # invalid_sample, template_error, llm_<kind> (rate_limit, server, timeout, ...), ...
    error_code: Mapped[str | None] = mapped_column(String(40))
    # every attempt's cost, added when the attempt ends (done, failed, retried or cancelled)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    repairs: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    leased_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
