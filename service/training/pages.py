from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from service.core.deps import ProjectViewer, SessionDep
from service.core.templating import render
from service.models import DatasetVersion, Role, TrainingJob
from service.projects.pages import add_tab
from service.training import service as training_service

router = APIRouter(include_in_schema=False)
add_tab("/training", "Training", order=90)


@router.get("/projects/{project_id}/training", response_class=HTMLResponse)
def training_page(request: Request, access: ProjectViewer, db: SessionDep):
    pid = access.project.id
    jobs = list(db.scalars(select(TrainingJob).where(TrainingJob.project_id == pid)
                           .order_by(TrainingJob.id.desc()).limit(100)))
    versions = list(db.scalars(select(DatasetVersion).where(
        DatasetVersion.project_id == pid, DatasetVersion.status == "ready").order_by(DatasetVersion.id.desc())))
    return render(request, "pages/training.html", jobs=jobs, versions=versions,
                  can_edit=access.at_least(Role.lead))


@router.get("/projects/{project_id}/training/{job_id}", response_class=HTMLResponse)
def training_job_page(request: Request, job_id: int, access: ProjectViewer, db: SessionDep):
    job = training_service.get_job(db, project_id=access.project.id, job_id=job_id)
    return render(request, "pages/training_job.html", job=job, can_edit=access.at_least(Role.lead))
