"""Preference training jobs (DPO, ORPO, KTO), the API side (no torch): their hyperparameters and
the validation that queues them. They are ``TrainingJob`` rows like SFT jobs (same queue, runner,
lifecycle, events, checkpoints, cancel and resume), on a preference version instead of a dataset
version; ``workers.training.preference`` trains them with TRL's trainers and a LoRA adapter."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from service.core import jobs
from service.core.errors import Invalid
from service.core.lookup import in_project
from service.models import PreferenceVersion, TrainingJob
from service.training import service as training_service
from service.training.config import TrainingConfig, _meta, validate_hyperparameters
from service.training.jobs import TRAINING

PREFERENCE_METHODS = ("dpo", "orpo", "kto")
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "robust", "apo_zero", "apo_down", "sigmoid_norm")


@dataclass
class PreferenceConfig(TrainingConfig):
    """Hyperparameters of one preference run: those of SFT plus the preference loss's."""

    method: str = field(default="dpo", metadata=_meta(
        "`dpo` (TRL DPOTrainer: pairs, a frozen reference = the start model), `orpo` (odds-ratio "
        "preference optimisation: pairs, no reference) or `kto` (unpaired desirable/undesirable "
        "answers, the KTO export).", kind="str", choices=PREFERENCE_METHODS))
    learning_rate: float = field(default=5e-5, metadata=_meta(
        "Peak learning rate of the LoRA parameters.", kind="float", gt=0, le=1))
    beta: float = field(default=0.1, metadata=_meta(
        "DPO/KTO: how far the policy may move from the reference (higher: less); ORPO: the weight "
        "of the odds-ratio term.", kind="float", gt=0, le=100))
    loss_type: str = field(default="sigmoid", metadata=_meta(
        "DPO loss (TRL `loss_type`).", kind="str", choices=DPO_LOSSES))
    quantize: bool = field(default=False, metadata=_meta(
        "Load the base in 4-bit NF4 (QLoRA) instead of bf16/fp32; not with `sft_job_id`.",
        kind="bool"))
    sft_job_id: int | None = field(default=None, metadata=_meta(
        "Start from this succeeded SFT job's adapter (merged into its base; the merged model is "
        "also DPO's reference) instead of the bare base model.", kind="int", optional=True, ge=1))
    optim: str = field(default="adamw_torch", metadata=_meta(
        "Optimizer (transformers name); paged/8-bit ones fall back to `adamw_torch` on CPU.",
        kind="str", choices=TrainingConfig.__dataclass_fields__["optim"].metadata["choices"]))


def _invalid(field_name: str, message: str) -> Invalid:
    return Invalid(message, details=[{"field": field_name, "message": message}])


def create_job(db: Session, *, project_id: int, preference_version_id: int | None, base_model: str,
               method: str, hyperparameters: dict[str, Any], use_validation: bool,
               suffix: str | None, evaluate_after: bool, merge_after: bool,
               actor_id: int | None) -> TrainingJob:
    version = in_project(db, PreferenceVersion, preference_version_id or None,
                         project_id=project_id)
    if version is None:
        raise _invalid("body.preference_version_id", f"{method} trains on a preference version "
                                                     "of this project")
    if version.status != "ready":
        raise _invalid("body.preference_version_id", f"preference version is {version.status}")
    counts = version.counts or {}
    if not counts.get("train") or (method != "kto" and not counts.get("pairs")):
        raise _invalid("body.preference_version_id", "the version has no training pairs")
    if evaluate_after and not counts.get("test"):
        raise _invalid("body.evaluate_after", "the version has no test split to evaluate on")
    problem = training_service.check_base_model(base_model)
    if problem:
        raise _invalid("body.base_model", problem)
    errors = validate_hyperparameters({**hyperparameters, "base_model": base_model, "method": method},
                                      PreferenceConfig)
    if errors:
        raise Invalid(f"invalid hyperparameter {errors[0][0]}: {errors[0][1]}",
                      details=[{"field": f"body.hyperparameters.{f}", "message": m} for f, m in errors])
    sft_id = hyperparameters.get("sft_job_id")
    if sft_id is not None:
        sft = in_project(db, TrainingJob, sft_id, project_id=project_id)
        if (sft is None or sft.status != "succeeded"
                or not (sft.artifacts or {}).get("adapter_dir")):
            raise _invalid("body.hyperparameters.sft_job_id",
                           "not a succeeded training job of this project with an adapter")
        if hyperparameters.get("quantize"):
            raise _invalid("body.hyperparameters.quantize", "an SFT adapter is merged into a "
                                                            "full-precision base: no 4-bit")
    job = TrainingJob(project_id=project_id, dataset_version_id=None,
                      preference_version_id=version.id, base_model=base_model, method=method,
                      hyperparameters=hyperparameters, use_validation=use_validation,
                      suffix=suffix, status="queued", evaluate_after=evaluate_after,
                      merge_after=merge_after,
                      created_by_id=actor_id, artifacts={})
    db.add(job)
    db.flush()
    training_service.add_event(db, job.id, "info", f"{method} job validated and queued")
    jobs.enqueue(db, TRAINING, job)
    return job
