from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from service.core.deps import ProjectViewer, SessionDep
from service.core.templating import render
from service.diversity import service as diversity_service
from service.diversity import tree as diversity_tree
from service.generation import plan as generation_plan
from service.generation import service as generation_service
from service.models import Document, GenerationJob, Role
from service.projects.pages import add_tab

router = APIRouter(include_in_schema=False)
add_tab("/generation", "Generation", order=20)


@router.get("/projects/{project_id}/generation", response_class=HTMLResponse)
def generation_page(request: Request, access: ProjectViewer, db: SessionDep):
    pid = access.project.id
    jobs = list(db.scalars(select(GenerationJob).where(GenerationJob.project_id == pid)
                           .order_by(GenerationJob.id.desc()).limit(50)))
    docs = list(db.scalars(select(Document).where(Document.project_id == pid, Document.status == "parsed")
                           .order_by(Document.id.desc()).limit(500)))
    templates = generation_service.list_templates(db, project_id=pid)
    first_stage = generation_plan.first_stage_templates(templates)
    default = next((t for t in first_stage if t.kind == "question"), first_stage[0] if first_stage else None)
    return render(request, "pages/generation.html", jobs=jobs, documents=docs,
                  providers=generation_service.list_providers(db, project_id=pid),
                  templates=templates, first_stage=first_stage, default_template=default,
                  answer_templates=[t for t in templates if t.kind == "answer"],
                  ga_pairs=diversity_service.list_pairs(db, project_id=pid),
                  leaves=diversity_tree.leaves(db, project_id=pid),
                  large_job=generation_plan.LARGE_JOB_UNITS, can_edit=access.at_least(Role.lead))


@router.get("/projects/{project_id}/templates/{template_id}", response_class=HTMLResponse)
def template_page(request: Request, template_id: int, access: ProjectViewer, db: SessionDep):
    t = generation_service.get_template(db, project_id=access.project.id, template_id=template_id)
    return render(request, "pages/template.html", template=t, can_edit=access.at_least(Role.lead),
                  variables=sorted(generation_service.kind_variables(t.kind)))
