from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base, BigId, JSONType, UTCDateTime, utcnow
from service.models.job import JobMixin


class TrainingJob(JobMixin, Base):
    __tablename__ = "training_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    # SFT methods train on a dataset version, preference methods (dpo|orpo|kto) on a preference one
    dataset_version_id: Mapped[int | None] = mapped_column(ForeignKey("dataset_versions.id", ondelete="RESTRICT"))
    preference_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("preference_versions.id", ondelete="RESTRICT"))
    base_model: Mapped[str] = mapped_column(String(500))
    method: Mapped[str] = mapped_column(String(10))  # qlora|lora|dpo|orpo|kto
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    use_validation: Mapped[bool] = mapped_column(Boolean, default=True)
    suffix: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="validating")
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    evaluate_after: Mapped[bool] = mapped_column(Boolean, default=False)
    merge_after: Mapped[bool] = mapped_column(Boolean, default=False)
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobEvent(Base):
    """Progress of a training job: step, loss, learning rate, tokens/s, memory; or a message."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("training_jobs.id", ondelete="CASCADE"))
    level: Mapped[str] = mapped_column(String(10), default="info")
    kind: Mapped[str] = mapped_column(String(20), default="message")  # message|metrics|checkpoint|eval
    message: Mapped[str] = mapped_column(Text, default="")
    step: Mapped[int | None] = mapped_column(Integer)
    loss: Mapped[float | None] = mapped_column(Float)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
