"""Training jobs: validate and queue (API side, no torch), run (gpu worker side), cancel,
stream events, resume after a dead worker. The ML itself is ``workers.training.train``."""
from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.config import get_settings
from service.core.db import get_sessionmaker, utcnow
from service.core.errors import Conflict, Invalid, NotFound
from service.models import DatasetExport, DatasetVersion, JobEvent, TrainingJob

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
BUILTIN_MODELS = ("smollm2-135m-instruct",)


def training_dir(job: TrainingJob) -> Path:
    """The job's folder; the creation time keeps it unique even if a database is recreated."""
    stamp = int(job.created_at.timestamp() * 1000)
    return (get_settings().data_dir / "training" / f"{job.id}-{stamp}").resolve()


def check_base_model(name: str) -> str | None:
    """Why the workers could not load ``name``, or None. Local paths are checked on this host,
    which shares the data folder with the workers in both deployment shapes."""
    name = name.strip()
    if name.lower() in BUILTIN_MODELS:
        return None
    path = Path(name).expanduser()
    if name.lower().endswith(".gguf"):
        return None if path.is_file() else f"GGUF file not found: {name}"
    if name.startswith(("/", "./", "../", "~")):
        if path.is_dir() and (path / "config.json").is_file():
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
    from workers.training.config import validate_hyperparameters  # pure Python, no torch

    version = db.get(DatasetVersion, dataset_version_id)
    if version is None or version.project_id != project_id:
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
    jobs.enqueue(db, "training.run", job_id=job.id, mark=(TrainingJob, job.id))
    return job


def get_job(db: Session, *, project_id: int, job_id: int) -> TrainingJob:
    job = db.get(TrainingJob, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound("training job not found", code="job_not_found")
    return job


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


# -- the worker side ---------------------------------------------------------------------------

def claim(job_id: int) -> TrainingJob | None:
    """Take the job: queued, or running with a stale heartbeat (its worker died)."""
    stale = utcnow() - timedelta(seconds=get_settings().job_stale_seconds)
    worker = f"{socket.gethostname()}:{threading.get_native_id()}"
    with get_sessionmaker()() as db:
        claimed = db.execute(update(TrainingJob).where(
            TrainingJob.id == job_id,
            or_(TrainingJob.status == "queued",
                (TrainingJob.status == "running") & (TrainingJob.heartbeat_at < stale)))
            .values(status="running", attempts=TrainingJob.attempts + 1, worker=worker,
                    heartbeat_at=utcnow(), started_at=utcnow())).rowcount
        db.commit()
        if not claimed:
            return None
        job = db.get(TrainingJob, job_id)
        if job.attempts > MAX_ATTEMPTS:
            job.status, job.finished_at = "failed", utcnow()
            job.error = f"gave up after {MAX_ATTEMPTS} attempts (workers died or stalled)"
            add_event(db, job_id, "error", job.error)
            db.commit()
            return None
        if job.attempts > 1:
            add_event(db, job_id, "warning", f"attempt {job.attempts}: resuming on {worker}",
                      kind="message", data={"attempt": job.attempts})
        db.commit()
        db.expunge(job)
        return job


def ensure_openai_export(version_id: int) -> Path:
    """The version's OpenAI-messages export (written now if missing), the training input."""
    from service.datasets import export as datasets_export
    from service.datasets import service as datasets_service

    with get_sessionmaker()() as db:
        version = db.get(DatasetVersion, version_id)
        export, _ = datasets_service.create_export(db, version=version, fmt="openai")
        db.info.pop("annotune_pending_tasks", None)  # we write it here, in this worker
        db.commit()
        if export.status != "ready":
            if export.status == "queued" and datasets_service.claim_export(db, export.id):
                db.commit()
                datasets_export.write_export(db, export.id)
                db.commit()
            else:
                deadline = time.time() + 600
                while export.status != "ready" and time.time() < deadline:
                    time.sleep(1)
                    db.expire_all()
                    export = db.get(DatasetExport, export.id)
                if export.status != "ready":
                    raise RuntimeError(f"the dataset export is {export.status}: {export.error}")
        return datasets_export.export_dir(version_id, "openai")


class DBHooks:
    """Adapts ``workers.training`` hooks to JobEvent rows, progress and cancellation."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self._last_cancel_check = 0.0
        self._cancel = False
        self._maker = get_sessionmaker()

    def _write(self, fn) -> None:
        with self._maker() as db:
            fn(db)
            db.execute(update(TrainingJob).where(TrainingJob.id == self.job_id)
                       .values(heartbeat_at=utcnow()))
            db.commit()

    def on_log(self, step, epoch, loss, learning_rate, grad_norm, tokens_per_s, memory) -> None:
        data = {"epoch": epoch, "learning_rate": learning_rate, "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s, "memory": memory}

        def write(db):
            add_event(db, self.job_id, "info", f"step {step} loss {loss}", kind="metrics",
                      step=step, loss=loss, data=data)
            db.execute(update(TrainingJob).where(TrainingJob.id == self.job_id).values(step=step))
        self._write(write)

    def on_event(self, level: str, message: str, data: dict[str, Any]) -> None:
        kind = data.get("kind")

        def write(db):
            add_event(db, self.job_id, level, message, kind="eval" if kind == "evaluated" else "message",
                      step=data.get("step"), loss=data.get("eval_loss"), data=data)
            if kind == "train_begin":
                db.execute(update(TrainingJob).where(TrainingJob.id == self.job_id)
                           .values(total_steps=data.get("max_steps"), step=data.get("start_step") or 0))
        self._write(write)

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if not self._cancel and now - self._last_cancel_check > 0.02:
            self._last_cancel_check = now
            with self._maker() as db:
                self._cancel = bool(db.scalar(select(TrainingJob.cancel_requested)
                                              .where(TrainingJob.id == self.job_id)))
                db.execute(update(TrainingJob).where(TrainingJob.id == self.job_id)
                           .values(heartbeat_at=utcnow()))
                db.commit()
        return self._cancel

    def on_checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        self._write(lambda db: add_event(db, self.job_id, "info", f"checkpoint at step {step}",
                                         kind="checkpoint", step=step,
                                         data={"path": path, "metrics": metrics}))


def _finish(job_id: int, **values: Any) -> None:
    with get_sessionmaker()() as db:
        db.execute(update(TrainingJob).where(TrainingJob.id == job_id)
                   .values(finished_at=utcnow(), heartbeat_at=utcnow(), **values))
        status = values.get("status")
        add_event(db, job_id, "error" if status == "failed" else "info",
                  values.get("error") or f"job {status}", kind="message")
        db.commit()


def run_job(job_id: int) -> dict[str, Any]:
    job = claim(job_id)
    if job is None:
        return {"status": "skipped"}
    from workers.training.config import TrainingConfig  # lazy: the gpu worker only
    from workers.training.train import train

    stop = threading.Event()

    def heartbeat() -> None:  # loading a model or saving a checkpoint can outlast log steps
        while not stop.wait(max(1.0, get_settings().job_stale_seconds / 3)):
            with get_sessionmaker()() as db:
                db.execute(update(TrainingJob).where(TrainingJob.id == job_id)
                           .values(heartbeat_at=utcnow()))
                db.commit()

    beat = threading.Thread(target=heartbeat, daemon=True, name=f"train-heartbeat-{job_id}")
    beat.start()
    try:
        folder = ensure_openai_export(job.dataset_version_id)
        train_file = folder / "train.jsonl"
        eval_file = folder / "validation.jsonl"
        manifest = (folder / "manifest.json")
        import hashlib
        import json

        manifest_sha = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
        config = TrainingConfig.from_dict({**job.hyperparameters, "base_model": job.base_model,
                                           "method": job.method})
        name = f"annotune-{job.id}" + (f"-{job.suffix}" if job.suffix else "")
        result = train(config, train_file=train_file,
                       eval_file=eval_file if job.use_validation and eval_file.is_file() else None,
                       output_dir=training_dir(job), callbacks=DBHooks(job.id),
                       model_cache_dir=get_settings().local_model_cache,
                       dataset_manifest={"dataset_version_id": job.dataset_version_id,
                                         "manifest_sha256": manifest_sha,
                                         "manifest": json.loads(manifest.read_text()) if manifest.is_file() else None},
                       adapter_name=name)
        if result.status == "cancelled":
            _finish(job_id, status="cancelled", artifacts=result.to_dict())
            return {"status": "cancelled"}
        artifacts = {**result.to_dict(), "manifest_sha256": manifest_sha, "name": name}
        if job.merge_after:
            from workers.training.artifacts import merge_adapter, vllm_serve_commands

            merged = merge_adapter(result.base_model_path, result.adapter_dir,
                                   training_dir(job) / "merged",
                                   dtype="bfloat16" if result.device.startswith("cuda") else "float32")
            artifacts["merged_dir"] = str(merged)
            artifacts["serve_commands"] = vllm_serve_commands(
                result.base_model_path, result.adapter_dir, name=name, lora_r=config.lora_r,
                merged_path=str(merged))
        _finish(job_id, status="succeeded", artifacts=artifacts)
        if job.evaluate_after:
            with get_sessionmaker()() as db:
                from service.evaluation import service as evaluation_service

                evaluation_service.request_after_training(db, training_job_id=job_id)
                db.commit()
        return {"status": "succeeded"}
    except Exception as exc:
        log.exception("training job %s failed", job_id)
        _finish(job_id, status="failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        return {"status": "failed"}
    finally:
        stop.set()


def sweep_stale_jobs() -> list[int]:
    stale = utcnow() - timedelta(seconds=get_settings().job_stale_seconds)
    resumed = []
    with get_sessionmaker()() as db:
        for job in db.scalars(select(TrainingJob).where(TrainingJob.status == "running",
                                                        TrainingJob.heartbeat_at < stale)):
            jobs.enqueue(db, "training.run", job_id=job.id, mark=(TrainingJob, job.id))
            resumed.append(job.id)
        db.commit()
    return resumed
