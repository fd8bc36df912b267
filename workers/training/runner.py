"""The training runner: holds a training job under the job kit's lease (``workers/jobs.py``) and
adapts ``workers.training.train`` hooks to ``JobEvent`` rows, progress and cancellation.

The lease's heartbeat thread keeps the job alive through model loading and checkpoint saves;
cancel is read at every training step (``should_cancel``), so a job stops within one step. A
worker killed mid-run leaves the job ``running`` with a stale heartbeat: the sweeper re-queues
it, the next runner resumes from the newest complete checkpoint, and after
``TRAINING.max_attempts`` claims the job fails with the reason.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from service.core.config import get_settings
from service.core.db import get_sessionmaker
from service.datasets import export as datasets_export
from service.datasets import service as datasets_service
from service.evaluation import service as evaluation_service
from service.models import DatasetExport, DatasetVersion, TrainingJob
from service.training import service as training_service
from service.training.config import TrainingConfig
from service.training.jobs import TRAINING
from service.training.preference import PREFERENCE_METHODS, PreferenceConfig
from workers import jobs as kit

log = logging.getLogger(__name__)


def run_job(job_id: int) -> dict[str, Any]:
    """Task body for ``training.run``."""
    return kit.drive(TRAINING, job_id, _body)


class DBHooks:
    """``workers.training.train`` callbacks, written under the lease."""

    def __init__(self, lease: kit.Lease):
        self.lease = lease
        self.job_id = lease.row_id

    def _write(self, fn: Any, **values: Any) -> None:
        with get_sessionmaker()() as db:
            fn(db)
            self.lease.guard(db, allow_cancelled=True, **values)
            db.commit()

    def on_log(self, step: int, epoch: float, loss: float | None, learning_rate: float | None,
               grad_norm: float | None, tokens_per_s: float | None, memory: Any,
               rewards: dict[str, float] | None = None) -> None:
        data = {"epoch": epoch, "learning_rate": learning_rate, "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_s, "memory": memory}
        if rewards:  # preference methods: reward margin, accuracy, chosen/rejected rewards
            data["rewards"] = rewards
        self._write(lambda db: training_service.add_event(
            db, self.job_id, "info", f"step {step} loss {loss}", kind="metrics", step=step,
            loss=loss, data=data), step=step)

    def on_event(self, level: str, message: str, data: dict[str, Any]) -> None:
        kind = data.get("kind")
        values: dict[str, Any] = {}
        if kind == "train_begin":
            values = {"total_steps": data.get("max_steps"), "step": data.get("start_step") or 0}
        self._write(lambda db: training_service.add_event(
            db, self.job_id, level, message, kind="eval" if kind == "evaluated" else "message",
            step=data.get("step"), loss=data.get("eval_loss"), data=data), **values)

    def should_cancel(self) -> bool:
        """Read at every step (one indexed query, small beside any real step): a cancel (or a
        lost lease) stops training within one step, however short the steps are."""
        return self.lease.should_stop(max_age=0)

    def on_checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        self._write(lambda db: training_service.add_event(
            db, self.job_id, "info", f"checkpoint at step {step}", kind="checkpoint", step=step,
            data={"path": path, "metrics": metrics}))


def ensure_openai_export(version_id: int) -> Path:
    """The version's OpenAI-messages export (written here, now, if missing): the training input."""
    from workers.datasets import runner as datasets_runner

    with get_sessionmaker()() as db:
        version = db.get(DatasetVersion, version_id)
        export, _ = datasets_service.create_export(db, version=version, fmt="openai")
        db.info.pop("annotune_pending_tasks", None)  # we write it here, in this worker
        db.commit()
        export_id = export.id
    datasets_runner.export_version(export_id)
    deadline = time.time() + 600  # another worker may be writing it
    while True:
        with get_sessionmaker()() as db:
            export = db.get(DatasetExport, export_id)
            status, error = export.status, export.error
        if status == "ready":
            return datasets_export.export_dir(version_id, "openai")
        if status == "failed" or time.time() > deadline:
            raise RuntimeError(f"the dataset export is {status}: {error}")
        time.sleep(1)


def _finish(lease: kit.Lease, status: str, **values: Any) -> None:
    with get_sessionmaker()() as db:
        training_service.add_event(db, lease.row_id, "error" if status == "failed" else "info",
                                   values.get("error") or f"job {status}", kind="message")
        if lease.finish(status, db, **values):
            db.commit()


def _body(lease: kit.Lease) -> dict[str, Any]:
    from workers.training.train import train  # lazy: torch

    job_id = lease.row_id
    with get_sessionmaker()() as db:
        job = db.get(TrainingJob, job_id)
        if lease.attempt > 1:
            training_service.add_event(db, job_id, "warning",
                                       f"attempt {lease.attempt}: resuming on {kit.worker_name()}",
                                       data={"attempt": lease.attempt})
            db.commit()
        db.expunge(job)
    try:
        return _train(lease, job, train)
    except kit.LeaseLost:
        raise
    except Exception as exc:
        log.exception("training job %s failed", job_id)
        _finish(lease, "failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        return {"status": "failed"}


def _train(lease: kit.Lease, job: TrainingJob, train: Any) -> dict[str, Any]:
    settings = {**job.hyperparameters, "base_model": job.base_model, "method": job.method}
    if job.method in PREFERENCE_METHODS:  # DPO/ORPO/KTO on a preference version's export
        from workers.training import preference

        folder = preference.ensure_export(job)
        config: TrainingConfig = PreferenceConfig.from_dict(settings)
        train = functools.partial(preference.train_preference,
                                  init_adapter=preference.sft_adapter(job))
    else:
        folder = ensure_openai_export(job.dataset_version_id)
        config = TrainingConfig.from_dict(settings)
    train_file, eval_file = folder / "train.jsonl", folder / "validation.jsonl"
    manifest = folder / "manifest.json"
    manifest_sha = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    name = f"annotune-{job.id}" + (f"-{job.suffix}" if job.suffix else "")
    out_dir = training_service.training_dir(job)
    result = train(config, train_file=train_file,
                   eval_file=eval_file if job.use_validation and eval_file.is_file() else None,
                   output_dir=out_dir, callbacks=DBHooks(lease),
                   model_cache_dir=get_settings().local_model_cache,
                   dataset_manifest={"dataset_version_id": job.dataset_version_id,
                                     "preference_version_id": job.preference_version_id,
                                     "manifest_sha256": manifest_sha,
                                     "manifest": json.loads(manifest.read_text())
                                     if manifest.is_file() else None},
                   adapter_name=name)
    if lease.lost:
        raise kit.LeaseLost(f"training job {job.id}")
    if result.status == "cancelled":
        _finish(lease, "cancelled", artifacts=result.to_dict())
        return {"status": "cancelled"}
    artifacts = {**result.to_dict(), "manifest_sha256": manifest_sha, "name": name}
    if job.merge_after:
        from workers.training.artifacts import merge_adapter, vllm_serve_commands

        dtype = "bfloat16" if result.device.startswith("cuda") else "float32"
        if (result.data or {}).get("init_adapter"):  # a preference job from an SFT adapter
            from workers.training.preference import merge_chain

            merged = merge_chain(result.base_model_path, [result.data["init_adapter"],
                                                          result.adapter_dir],
                                 out_dir / "merged", dtype=dtype)
        else:
            merged = merge_adapter(result.base_model_path, result.adapter_dir,
                                   out_dir / "merged", dtype=dtype)
        artifacts["merged_dir"] = str(merged)
        artifacts["serve_commands"] = vllm_serve_commands(
            result.base_model_path, result.adapter_dir, name=name, lora_r=config.lora_r,
            merged_path=str(merged))
        if (result.data or {}).get("init_adapter"):  # base + this adapter is not the model
            artifacts["serve_commands"].pop("lora", None)
    _finish(lease, "succeeded", artifacts=artifacts)
    if job.evaluate_after:  # the cross-domain flow lives here, in the runner
        with get_sessionmaker()() as db:
            if job.preference_version_id:  # reward accuracy on the version's test pairs
                from service.evaluation import preference as preference_eval

                preference_eval.request_after_training(db, training_job_id=job.id)
            else:
                evaluation_service.request_after_training(db, training_job_id=job.id)
            db.commit()
    return {"status": "succeeded"}
