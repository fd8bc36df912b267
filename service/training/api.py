from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from service.core.deps import ProjectLead, ProjectViewer, SessionDep
from service.core.errors import Invalid, NotFound
from service.core.openapi import file_media, file_response
from service.core.pagination import CursorQ, LimitQ, Page, page, paginate
from service.generation.schemas import ProviderRead
from service.models import JobEvent, TrainingJob
from service.training import preference as preference_training
from service.training import schemas
from service.training import service as training_service

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["training"])


@router.post("/training-jobs", response_model=schemas.TrainingJobRead, status_code=status.HTTP_201_CREATED)
def create_training_job(body: schemas.TrainingJobCreate, access: ProjectLead, db: SessionDep):
    """SFT (qlora, lora) on a dataset version, or DPO/ORPO/KTO on a preference version."""
    if body.method in preference_training.PREFERENCE_METHODS:
        return preference_training.create_job(
            db, project_id=access.project.id, preference_version_id=body.preference_version_id,
            base_model=body.base_model, method=body.method, hyperparameters=body.hyperparameters,
            use_validation=body.use_validation, suffix=body.suffix,
            evaluate_after=body.evaluate_after, merge_after=body.merge_after,
            actor_id=access.user.id)
    if body.dataset_version_id is None:
        raise Invalid(f"{body.method} trains on a dataset version", details=[
            {"field": "body.dataset_version_id", "message": "required"}])
    return training_service.create_job(
        db, project_id=access.project.id, dataset_version_id=body.dataset_version_id,
        base_model=body.base_model, method=body.method, hyperparameters=body.hyperparameters,
        use_validation=body.use_validation, suffix=body.suffix, evaluate_after=body.evaluate_after,
        merge_after=body.merge_after, actor_id=access.user.id)


@router.get("/training-jobs", response_model=Page[schemas.TrainingJobRead])
def list_training_jobs(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None):
    return page(db, select(TrainingJob).where(TrainingJob.project_id == access.project.id),
                TrainingJob.id, limit=limit, cursor=cursor, descending=True)


@router.get("/training-jobs/{job_id}", response_model=schemas.TrainingJobRead)
def get_training_job(job_id: int, access: ProjectViewer, db: SessionDep):
    return training_service.get_job(db, project_id=access.project.id, job_id=job_id)


@router.post("/training-jobs/{job_id}/cancel", response_model=schemas.TrainingJobRead)
def cancel_training_job(job_id: int, access: ProjectLead, db: SessionDep):
    job = training_service.get_job(db, project_id=access.project.id, job_id=job_id)
    return training_service.cancel_job(db, job)


@router.post("/training-jobs/{job_id}/provider", response_model=ProviderRead,
             status_code=status.HTTP_201_CREATED,
             responses={200: {"model": ProviderRead,
                              "description": "the job was registered before: the same provider"},
                        409: {"description": "the job has not succeeded (no model yet)"}})
def register_training_provider(job_id: int, access: ProjectLead, db: SessionDep,
                               response: Response):
    """Register the job's fine-tuned model (merged folder, else base + adapter) as a local
    provider of the project: generation jobs draft with it (in the worker, ``gpu`` queue) and
    evaluation runs with ``model_kind=endpoint`` score it. Idempotent."""
    job = training_service.get_job(db, project_id=access.project.id, job_id=job_id)
    provider, created = training_service.register_provider(db, job, actor=access.user)
    if not created:
        response.status_code = status.HTTP_200_OK
    return ProviderRead.model_validate(provider)


@router.get("/training-jobs/{job_id}/events", response_model=Page[schemas.JobEventRead])
def training_events(job_id: int, access: ProjectViewer, db: SessionDep, limit: LimitQ = 200,
                    cursor: CursorQ = None,
                    after: Annotated[int | None, Query(description=(
                        "only events after this id (a page that follows a running job polls "
                        "with the last id it saw)"))] = None):
    """The job's events (log lines, metrics, checkpoints), oldest first."""
    training_service.get_job(db, project_id=access.project.id, job_id=job_id)
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    if after:
        stmt = stmt.where(JobEvent.id > after)
    return page(db, stmt, JobEvent.id, limit=limit, cursor=cursor)


@router.get("/training-jobs/{job_id}/checkpoints", response_model=Page[schemas.CheckpointRead])
def training_checkpoints(job_id: int, access: ProjectViewer, db: SessionDep, limit: LimitQ = 100,
                         cursor: CursorQ = None):
    training_service.get_job(db, project_id=access.project.id, job_id=job_id)
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "checkpoint")
    items, nxt = paginate(db, stmt, JobEvent.id, limit=limit, cursor=cursor)
    return {"items": [{"step": e.step, "path": Path(e.data.get("path", "")).name,
                       "metrics": e.data.get("metrics"), "created_at": e.created_at}
                      for e in items], "next_cursor": nxt}


ARTIFACT_FILES = ("adapter_model.safetensors", "adapter_config.json", "training_config.json",
                  "loss_curve.json")


@router.get("/training-jobs/{job_id}/artifacts/{name}", response_class=FileResponse,
            responses=file_response("application/octet-stream", "application/json",
                                    description="the artifact (weights: bytes; configs: JSON)"))
def download_artifact(job_id: int, name: str, access: ProjectViewer, db: SessionDep) -> FileResponse:
    job = training_service.get_job(db, project_id=access.project.id, job_id=job_id)
    if name not in ARTIFACT_FILES:
        raise NotFound("no such artifact", code="artifact_not_found")
    root = training_service.training_dir(job)
    for candidate in (root / "adapter" / name, root / name):
        if candidate.is_file() and candidate.resolve().is_relative_to(root):
            return FileResponse(candidate, filename=name, media_type=file_media(name))
    raise NotFound("artifact not written yet", code="artifact_not_found")
