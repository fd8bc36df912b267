from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.jobs import JobLifecycleRead
from service.models import TrainingStatus


class TrainingJobCreate(BaseModel):
    dataset_version_id: int | None = Field(None, description="SFT methods (qlora, lora)")
    preference_version_id: int | None = Field(None, description="preference methods (dpo, orpo, kto)")
    base_model: str = Field("smollm2-135m-instruct", min_length=1, max_length=500,
                            description="smollm2-135m-instruct, a local model folder, a .gguf file, "
                                        "or a hub id where the workers reach a hub")
    method: Literal["qlora", "lora", "dpo", "orpo", "kto"] = "qlora"
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description=(
        "epochs, learning_rate, batch_size, gradient_accumulation, max_seq_length, warmup_ratio, "
        "lr_scheduler, lora_r, lora_alpha, lora_dropout, target_modules, seed, max_samples, "
        "save_steps, logging_steps, gradient_checkpointing, optim; dpo/orpo/kto also beta, "
        "loss_type, quantize, sft_job_id (start from that SFT job's adapter)"))
    use_validation: bool = True
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    evaluate_after: bool = Field(False, description="evaluate base and fine-tuned on the test split")
    merge_after: bool = Field(False, description="also write the adapter merged into the base")


class TrainingJobRead(JobLifecycleRead):
    default_queue: ClassVar[str] = "gpu"
    id: int
    project_id: int
    dataset_version_id: int | None
    preference_version_id: int | None = None
    base_model: str
    method: str
    hyperparameters: dict[str, Any]
    use_validation: bool
    suffix: str | None
    status: TrainingStatus
    step: int
    total_steps: int | None
    attempts: int
    worker: str | None
    cancel_requested: bool
    evaluate_after: bool
    merge_after: bool
    artifacts: dict[str, Any]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    level: str
    kind: str
    message: str
    step: int | None
    loss: float | None
    data: dict[str, Any]
    created_at: datetime



class CheckpointRead(BaseModel):
    step: int | None
    path: str = Field(description="the checkpoint folder's name")
    metrics: dict[str, Any] | None
    created_at: datetime
