"""Training jobs, the API side (no torch): validate and queue, cancel, events. The runner that
holds a job and trains is ``workers/training/runner.py``; the ML itself ``workers.training.train``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.config import get_settings
from service.core.db import utcnow
from service.core.errors import Conflict, Invalid
from service.core.lookup import get_in_project, in_project
from service.generation import service as generation_service
from service.models import DatasetVersion, JobEvent, LLMProvider, TrainingJob, User
from service.training.config import validate_hyperparameters
from service.training.jobs import TRAINING

log = logging.getLogger(__name__)
BUILTIN_MODELS = ("smollm2-135m-instruct",)


def training_dir(job: TrainingJob) -> Path:
    """The job's folder; the creation time keeps it unique even if a database is recreated."""
    stamp = int(job.created_at.timestamp() * 1000)
    return (get_settings().data_dir / "training" / f"{job.id}-{stamp}").resolve()


def check_base_model(name: str, *, adapter_ok: bool = False) -> str | None:
    """Why the workers could not load ``name``, or None. Local paths are checked on this host,
    which shares the data folder with the workers in both deployment shapes. ``adapter_ok``: a
    LoRA adapter folder (base + adapter, for generation and evaluation, not training) will do."""
    name = name.strip()
    if name.lower() in BUILTIN_MODELS:
        return None
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        return None if path.is_file() else f"GGUF file not found: {name}"
    if name.startswith(("/", "./", "../", "~")):
        if path.is_dir() and (path / "config.json").is_file():
            return None
        if adapter_ok and path.is_dir() and (path / "adapter_config.json").is_file():
            return None
        return f"not a model folder (no config.json): {name}"
    if get_settings().allow_hub_models:
        return None
    return (f"unknown base model {name!r}: use {', '.join(BUILTIN_MODELS)}, a local model folder, "
            "a .gguf file, or set ANNOTUNE_ALLOW_HUB_MODELS=true on machines that reach a hub")


def create_job(db: Session, *, project_id: int, dataset_version_id: int, base_model: str,
               method: str, hyperparameters: dict[str, Any], use_validation: bool,
               suffix: str | None, evaluate_after: bool, merge_after: bool,
               actor_id: int | None) -> TrainingJob:
    version = in_project(db, DatasetVersion, dataset_version_id, project_id=project_id)
    if version is None:
        raise Invalid("dataset version not found in this project",
                      details=[{"field": "body.dataset_version_id", "message": "unknown version"}])
    if version.status != "ready":
        raise Invalid(f"dataset version is {version.status}, not ready",
                      details=[{"field": "body.dataset_version_id", "message": f"status {version.status}"}])
    if not (version.counts or {}).get("train"):
        raise Invalid("dataset version has no training samples",
                      details=[{"field": "body.dataset_version_id", "message": "empty train split"}])
    problem = check_base_model(base_model)
    if problem:
        raise Invalid(problem, details=[{"field": "body.base_model", "message": problem}])
    errors = validate_hyperparameters({**hyperparameters, "base_model": base_model, "method": method})
    if errors:
        raise Invalid(f"invalid hyperparameter {errors[0][0]}: {errors[0][1]}",
                      details=[{"field": f"body.hyperparameters.{f}", "message": m} for f, m in errors])
    job = TrainingJob(project_id=project_id, dataset_version_id=version.id, base_model=base_model,
                      method=method, hyperparameters=hyperparameters, use_validation=use_validation,
                      suffix=suffix, status="validating", evaluate_after=evaluate_after,
                      merge_after=merge_after, created_by_id=actor_id, artifacts={})
    db.add(job)
    db.flush()
    job.status = "queued"
    add_event(db, job.id, "info", "job validated and queued", kind="message")
    jobs.enqueue(db, TRAINING, job)
    return job


def get_job(db: Session, *, project_id: int, job_id: int) -> TrainingJob:
    return get_in_project(db, TrainingJob, job_id, project_id=project_id, what="training job",
                          code="job_not_found")


def cancel_job(db: Session, job: TrainingJob) -> TrainingJob:
    if job.status in ("succeeded", "failed", "cancelled"):
        raise Conflict(f"job already {job.status}", code="bad_state")
    if job.status in ("validating", "queued"):
        job.status = "cancelled"
        job.finished_at = utcnow()
    job.cancel_requested = True
    add_event(db, job.id, "info", "cancellation requested", kind="message")
    db.flush()
    return job


def model_path(job: TrainingJob) -> str:
    """Where the job's fine-tuned model is: the merged folder when one was written, else the
    adapter folder (which names its base in ``adapter_config.json``)."""
    artifacts = job.artifacts or {}
    if job.status != "succeeded" or not artifacts.get("adapter_dir"):
        raise Conflict(f"training job is {job.status}; only a succeeded job has a model",
                       code="bad_state")
    return str(artifacts.get("merged_dir") or artifacts["adapter_dir"])


def register_provider(db: Session, job: TrainingJob, *, actor: User | None = None
                      ) -> tuple[LLMProvider, bool]:
    """The job's fine-tuned model as a local provider of its project, in the worker on ``gpu``
    (``(provider, created)``; asking again returns the same provider). Generation jobs draft
    with it and evaluation runs score it (``model_kind=endpoint``) like any other provider."""
    path = model_path(job)
    existing = db.scalar(select(LLMProvider).where(LLMProvider.project_id == job.project_id,
                                                   LLMProvider.training_job_id == job.id)
                         .order_by(LLMProvider.id).limit(1))
    if existing is not None:
        return existing, False
    label = (job.artifacts or {}).get("name") or f"annotune-{job.id}"
    provider = generation_service.create_provider(db, project_id=job.project_id, actor=actor, data={
        "name": f"{label} (fine-tuned {job.base_model}, training job #{job.id})"[:200],
        "kind": "local", "base_url": "", "model": path, "max_concurrency": 1, "timeout_s": 600,
        "default_params": {"max_tokens": 256}, "extra_body": {}, "training_job_id": job.id})
    add_event(db, job.id, "info", f"registered as provider #{provider.id}", kind="message",
              data={"provider_id": provider.id, "model": path})
    return provider, True


def add_event(db: Session, job_id: int, level: str, message: str, *, kind: str = "message",
              step: int | None = None, loss: float | None = None,
              data: dict[str, Any] | None = None) -> None:
    db.add(JobEvent(job_id=job_id, level=level, kind=kind, message=message, step=step, loss=loss,
                    data=data or {}))
    db.flush()


def list_events(db: Session, *, job_id: int, after: int | None, limit: int) -> list[JobEvent]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    if after:
        stmt = stmt.where(JobEvent.id > after)
    return list(db.scalars(stmt.order_by(JobEvent.id).limit(limit)))
