from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, JSONType, UTCDateTime, utcnow
from service.models.job import JobMixin


class EvalCounters:
    """What an evaluation run (of samples or of preference pairs) has scored so far: items in
    all, done, failed, and the aggregate scores; the run pages draw their progress bar from it."""

    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    aggregate: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class EvalRun(EvalCounters, JobMixin, Base):
    __tablename__ = "eval_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    dataset_version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id", ondelete="RESTRICT"))
    split: Mapped[str] = mapped_column(String(12), default="test")
    name: Mapped[str] = mapped_column(String(200), default="")
    model_kind: Mapped[str] = mapped_column(String(20))  # base|adapter|endpoint
    base_model: Mapped[str | None] = mapped_column(String(500))
    training_job_id: Mapped[int | None] = mapped_column(ForeignKey("training_jobs.id", ondelete="SET NULL"))
    provider_id: Mapped[int | None] = mapped_column(ForeignKey("llm_providers.id", ondelete="SET NULL"))
    generation: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    metrics: Mapped[list[str]] = mapped_column(JSONType, default=list)
    metric_options: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EvalPrediction(Base):
    __tablename__ = "eval_predictions"
    __table_args__ = (UniqueConstraint("run_id", "item_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("dataset_version_items.id", ondelete="CASCADE"), index=True)
    sample_id: Mapped[int] = mapped_column(BigId)
    prompt: Mapped[list[dict[str, str]]] = mapped_column(JSONType)
    prediction: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    scores: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
