from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import select

from service.auth import audit
from service.core.deps import Access, ProjectLead, ProjectViewer, SessionDep
from service.core.errors import Conflict, Forbidden
from service.core.lookup import get_in_project
from service.core.pagination import CursorQ, LimitQ, Page, page, paginate
from service.generation import plan as generation_plan
from service.generation import schemas
from service.generation import service as generation_service
from service.models import (
    Chunk,
    GenerationJob,
    GenerationUnit,
    LLMProvider,
    PromptTemplate,
    Role,
    UnitStatus,
)

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["generation"])


def _provider(p) -> schemas.ProviderRead:
    out = schemas.ProviderRead.model_validate(p)
    out.has_api_key = bool(p.api_key_encrypted)
    return out


@router.get("/providers", response_model=Page[schemas.ProviderRead])
def list_providers(access: ProjectViewer, db: SessionDep, limit: LimitQ = 100,
                   cursor: CursorQ = None):
    """The project's providers and the global ones (the built-in model first)."""
    items, nxt = paginate(db, generation_service.providers_query(db, project_id=access.project.id),
                          LLMProvider.id, limit=limit, cursor=cursor)
    return {"items": [_provider(p) for p in items], "next_cursor": nxt}


@router.post("/providers", response_model=schemas.ProviderRead, status_code=status.HTTP_201_CREATED)
def create_provider(body: schemas.ProviderCreate, access: ProjectLead, db: SessionDep):
    return _provider(generation_service.create_provider(db, project_id=access.project.id,
                                                        data=body.model_dump(), actor=access.user))


def _editable(p, access: Access):
    if p.project_id is None and not access.user.is_admin:
        raise Forbidden("global providers are managed by admins")
    if p.api_key_encrypted and access.role != Role.owner:  # admins count as owners
        raise Forbidden("a provider with an API key is changed by a project owner or an admin",
                        code="keyed_provider")
    return p


@router.patch("/providers/{provider_id}", response_model=schemas.ProviderRead)
def update_provider(provider_id: int, body: schemas.ProviderUpdate, access: ProjectLead, db: SessionDep):
    p = _editable(generation_service.get_provider(db, project_id=access.project.id,
                                                  provider_id=provider_id), access)
    return _provider(generation_service.update_provider(db, p, body.model_dump(exclude_unset=True),
                                                        actor=access.user))


@router.delete("/providers/{provider_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_provider(provider_id: int, access: ProjectLead, db: SessionDep) -> Response:
    p = _editable(generation_service.get_provider(db, project_id=access.project.id,
                                                  provider_id=provider_id), access)
    audit.record(db, "provider.delete", actor=access.user, project_id=p.project_id,
                 target=f"provider:{p.id}", details={"base_url": p.base_url})
    if db.scalar(select(GenerationJob.id).where(GenerationJob.provider_id == p.id).limit(1)):
        raise Conflict("generation jobs use this provider; it cannot be deleted",
                       code="provider_in_use")
    db.delete(p)
    db.flush()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/providers/{provider_id}/test", response_model=schemas.ProviderTest)
def test_provider(provider_id: int, access: ProjectLead, db: SessionDep) -> dict:
    p = generation_service.get_provider(db, project_id=access.project.id, provider_id=provider_id)
    return generation_service.test_provider(p)


@router.get("/providers/{provider_id}/usage", response_model=schemas.ProviderUsage)
def provider_usage(provider_id: int, access: ProjectViewer, db: SessionDep):
    """What this project's generation jobs spent on the provider (every attempt counted)."""
    return generation_service.provider_usage(db, project_id=access.project.id,
                                             provider_id=provider_id)


@router.get("/templates", response_model=Page[schemas.TemplateRead])
def list_templates(access: ProjectViewer, db: SessionDep, limit: LimitQ = 100,
                   cursor: CursorQ = None):
    """The project's templates, then the built-in ones, by name and version."""
    return page(db, generation_service.templates_query(db, project_id=access.project.id),
                PromptTemplate.id, limit=limit, cursor=cursor,
                order=generation_service.TEMPLATE_ORDER)


@router.post("/templates", response_model=schemas.TemplateRead, status_code=status.HTTP_201_CREATED)
def create_template(body: schemas.TemplateCreate, access: ProjectLead, db: SessionDep):
    return generation_service.create_template(db, project_id=access.project.id, name=body.name,
                                              kind=body.kind, lang=body.lang, text=body.text,
                                              parser=body.parser, actor_id=access.user.id)


@router.post("/templates/{template_id}/preview", response_model=schemas.TemplateRendered)
def preview_template(template_id: int, body: schemas.TemplatePreview, access: ProjectViewer,
                     db: SessionDep) -> dict:
    t = generation_service.get_template(db, project_id=access.project.id, template_id=template_id)
    if body.chunk_id is not None:
        chunk = get_in_project(db, Chunk, body.chunk_id, project_id=access.project.id,
                               what="chunk", code="chunk_not_found")
    else:
        chunk = db.scalar(select(Chunk).where(Chunk.project_id == access.project.id).order_by(Chunk.id))
    if body.text is not None:
        generation_service.check_template(body.text, t.kind)
    variables = generation_service.template_variables(t, chunk, body.params)
    return {"chunk_id": chunk.id if chunk else None,
            "rendered": generation_service.render_template(t, variables, text=body.text)}


@router.post("/generation-jobs", response_model=schemas.JobRead, status_code=status.HTTP_201_CREATED)
def create_job(body: schemas.JobCreate, access: ProjectLead, db: SessionDep):
    return generation_service.create_job(
        db, project_id=access.project.id, template_id=body.template_id, provider_id=body.provider_id,
        document_ids=body.document_ids, chunk_ids=body.chunk_ids, unused_only=body.unused_only,
        samples_per_chunk=body.samples_per_chunk, params=body.params, actor_id=access.user.id,
        workers=body.workers)


@router.get("/generation-jobs", response_model=Page[schemas.JobRead])
def list_jobs(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None):
    return page(db, select(GenerationJob).where(GenerationJob.project_id == access.project.id),
                GenerationJob.id, limit=limit, cursor=cursor, descending=True)


@router.get("/generation-jobs/{job_id}", response_model=schemas.JobRead)
def get_job(job_id: int, access: ProjectViewer, db: SessionDep):
    job = generation_service.get_job(db, project_id=access.project.id, job_id=job_id)
    out = schemas.JobRead.model_validate(job)
    out.failure_reasons = generation_service.failure_summary(db, job.id)
    return out


@router.post("/generation-jobs/{job_id}/{action}", response_model=schemas.JobRead)
def job_action(job_id: int, action: Literal["pause", "resume", "cancel"], access: ProjectLead,
               db: SessionDep):
    job = generation_service.get_job(db, project_id=access.project.id, job_id=job_id)
    return generation_service.set_job_state(db, job, action)


@router.get("/generation-jobs/{job_id}/units", response_model=Page[schemas.UnitRead])
def list_units(job_id: int, access: ProjectViewer, db: SessionDep, limit: LimitQ = 100,
               cursor: CursorQ = None,
               status_: Annotated[UnitStatus | None, Query(alias="status")] = None):
    generation_service.get_job(db, project_id=access.project.id, job_id=job_id)
    stmt = select(GenerationUnit).where(GenerationUnit.job_id == job_id)
    if status_:
        stmt = stmt.where(GenerationUnit.status == status_.value)
    return page(db, stmt, GenerationUnit.id, limit=limit, cursor=cursor)


@router.post("/generation-jobs/plan", response_model=generation_plan.JobPlan,
             responses={422: {"description": "a second-stage template, or bad parameters"}})
def plan_job(body: schemas.JobCreate, access: ProjectLead, db: SessionDep) -> generation_plan.JobPlan:
    """What POST /generation-jobs would start with this body: units, prompts, estimated tokens
    and time. Creates nothing."""
    return generation_plan.plan_job(db, project_id=access.project.id, body=body)
