from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Response, UploadFile, status
from sqlalchemy import select

from service.core.deps import ProjectAnnotator, ProjectLead, ProjectViewer, SessionDep
from service.core.errors import Invalid
from service.core.pagination import CursorQ, LimitQ, Page, page
from service.models import SampleRevision
from service.review import api as review_api
from service.review import bulk as review_bulk
from service.review import schemas as review_schemas
from service.review import service as review_service
from service.samples import imports, schemas, tokens
from service.samples import service as samples_service

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["samples"])
ScoreBound = Annotated[float | None, Query(allow_inf_nan=False,
                                           description="a finite number; with score_key")]
SORT_HELP = ("one of " + ", ".join(samples_service.SORTS) + "; default id (order=desc is the old "
             "spelling of -id); the cursor is tied to the sort")


def _filter(status_: list[schemas.SampleStatus] | None, tag, document_id, generation_job_id, import_job_id,
            assignee_id, unassigned, reviewer_id, q, score_key, score_min, score_max,
            domain_leaf_id=None):
    return samples_service.SampleFilter(
        status=[s.value for s in status_ or []], tag=tag, document_id=document_id, generation_job_id=generation_job_id,
        import_job_id=import_job_id, assignee_id=assignee_id, unassigned=unassigned,
        reviewer_id=reviewer_id, q=q, score_key=score_key, score_min=score_min, score_max=score_max,
        domain_leaf_id=domain_leaf_id)


def _expected_version(if_match: str | None, body_version: int | None) -> int:
    if if_match:
        raw = if_match.strip().removeprefix("W/").strip('"')
        try:
            return int(raw)
        except ValueError as exc:
            raise Invalid("If-Match must be the sample version",
                          details=[{"field": "header.if-match", "message": "an integer version"}]) from exc
    if body_version is None:
        raise Invalid("send the version you started from (If-Match header or body.version)",
                      status_code=428, code="precondition_required",
                      details=[{"field": "body.version", "message": "required"}])
    return body_version


@router.get("/samples", response_model=Page[schemas.SampleRead])
def list_samples(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None,
                 status_: Annotated[list[schemas.SampleStatus] | None,
                                    Query(alias="status", description="any of these")] = None,
                 tag: str | None = None, document_id: int | None = None,
                 generation_job_id: int | None = None, import_job_id: int | None = None,
                 assignee_id: int | None = None, unassigned: bool = False,
                 reviewer_id: int | None = None, q: str | None = None, score_key: str | None = None,
                 score_min: ScoreBound = None, score_max: ScoreBound = None,
                 order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
                 sort: Annotated[schemas.SampleSort | None, Query(description=SORT_HELP)] = None,
                 domain_leaf_id: int | None = None):
    flt = _filter(status_, tag, document_id, generation_job_id, import_job_id, assignee_id,
                  unassigned, reviewer_id, q, score_key, score_min, score_max, domain_leaf_id)
    items, nxt = samples_service.list_samples(db, project_id=access.project.id, flt=flt, limit=limit,
                                              cursor=cursor, descending=order == "desc",
                                              sort=sort.value if sort else None)
    return {"items": items, "next_cursor": nxt}


@router.post("/samples", response_model=schemas.SampleRead, status_code=status.HTTP_201_CREATED)
def create_sample(body: schemas.SampleCreate, access: ProjectLead, db: SessionDep):
    document_id, chunk_id = samples_service.check_source(
        db, project_id=access.project.id, document_id=body.document_id, chunk_id=body.chunk_id)
    return samples_service.create_sample(db, project_id=access.project.id, messages=body.messages,
                                         actor_id=access.user.id, tags=body.tags,
                                         reasoning=body.reasoning, status=body.status,
                                         document_id=document_id, chunk_id=chunk_id)


@router.get("/samples/{sample_id}", response_model=schemas.SampleRead)
def get_sample(sample_id: int, access: ProjectViewer, db: SessionDep, response: Response):
    sample = samples_service.get_sample(db, project_id=access.project.id, sample_id=sample_id)
    response.headers["ETag"] = f'"{sample.version}"'
    return sample


@router.patch("/samples/{sample_id}", response_model=schemas.SampleRead)
def update_sample(sample_id: int, body: schemas.SampleUpdate, access: ProjectAnnotator,
                  db: SessionDep, response: Response,
                  if_match: Annotated[str | None, Header()] = None):
    sample = samples_service.update_sample(
        db, project_id=access.project.id, sample_id=sample_id,
        expected_version=_expected_version(if_match, body.version), actor_id=access.user.id,
        messages=body.messages, tags=body.tags, reasoning=body.reasoning, comment=body.comment)
    response.headers["ETag"] = f'"{sample.version}"'
    return sample


@router.post("/samples/{sample_id}/status", response_model=schemas.SampleRead)
def change_status(sample_id: int, body: schemas.StatusChange, access: ProjectAnnotator,
                  db: SessionDep, if_match: Annotated[str | None, Header()] = None):
    review_service.check_decider(samples_service.get_sample(db, project_id=access.project.id,
                                                            sample_id=sample_id), access)
    return samples_service.update_sample(
        db, project_id=access.project.id, sample_id=sample_id,
        expected_version=_expected_version(if_match, body.version), actor_id=access.user.id,
        status=body.status, reject_reason=body.reason)


@router.get("/samples/{sample_id}/history", response_model=Page[schemas.RevisionRead])
def sample_history(sample_id: int, access: ProjectViewer, db: SessionDep, limit: LimitQ = 100,
                   cursor: CursorQ = None):
    """The sample's revisions, oldest first."""
    samples_service.get_sample(db, project_id=access.project.id, sample_id=sample_id)
    return page(db, select(SampleRevision).where(SampleRevision.sample_id == sample_id),
                SampleRevision.id, limit=limit, cursor=cursor)


@router.post("/samples-bulk", response_model=review_schemas.BulkChangeResult,
             response_model_exclude_unset=True, responses=review_api.BULK_STARTED)
def bulk_change(body: schemas.BulkAction, access: ProjectLead, db: SessionDep):
    """Change now (200), or above ``review_bulk.TASK_THRESHOLD`` samples start a job (202)."""
    flt = samples_service.SampleFilter(**body.filter.model_dump(mode="json"))
    if body.assignee_id is not None:
        review_service.check_assignees(db, project_id=access.project.id,
                                       user_ids=[body.assignee_id], field="body.assignee_id")
    matching = samples_service.count_samples(db, project_id=access.project.id, flt=flt)
    if body.dry_run:
        return {"matching": matching, "changed": 0, "dry_run": True}
    _status, result = review_bulk.bulk_change(
        db, project_id=access.project.id, actor_id=access.user.id, flt=flt, matching=matching,
        status=body.status, add_tags=body.add_tags, remove_tags=body.remove_tags,
        assignee_id=body.assignee_id, unassign=body.unassign)
    return review_api.bulk_answer(result)


TOKENIZER_HELP = ("simple, tiktoken:<encoding> (cl100k_base, o200k_base, ...) or a configured "
                  "hf: name; unknown or unavailable names are a 422")


def checked_tokenizer(name: str | None, field: str = "query.tokenizer") -> str | None:
    """The API edge for tokenizer names: one that cannot be loaded here is the client's 422,
    never a 500 (which names ``service/samples/tokens.py`` accepts is decided there)."""
    if name is None:
        return None
    try:
        tokens.get_tokenizer(name)
    except Exception as exc:  # ValueError (unknown), TokenizerUnavailable, OSError, ...
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise Invalid(f"tokenizer {name[:100]!r} is not available: {message}",
                      code="unknown_tokenizer",
                      details=[{"field": field, "message": TOKENIZER_HELP}]) from exc
    return name


@router.get("/sample-stats", response_model=schemas.SampleStats)
def sample_stats(access: ProjectViewer, db: SessionDep,
                 tokenizer: Annotated[str | None, Query(max_length=500,
                                                        description=TOKENIZER_HELP)] = None) -> dict:
    tokenizer = checked_tokenizer(tokenizer)
    return {"status_counts": samples_service.status_counts(db, project_id=access.project.id),
            "tokens": samples_service.token_stats(db, project_id=access.project.id, tokenizer=tokenizer)}


@router.post("/imports", response_model=schemas.ImportRead, status_code=status.HTTP_202_ACCEPTED)
def create_import(access: ProjectLead, db: SessionDep, file: Annotated[UploadFile, File()],
                  format: Annotated[str | None, Form()] = None,
                  mapping: Annotated[str | None, Form(description="JSON field mapping")] = None,
                  mode: Annotated[str, Form()] = "strict"):
    parsed = None
    if mapping:
        try:
            parsed = json.loads(mapping)
        except ValueError as exc:
            raise Invalid("mapping is not valid JSON",
                          details=[{"field": "mapping", "message": str(exc)}]) from exc
        if not isinstance(parsed, dict):
            raise Invalid("mapping must be a JSON object", details=[{"field": "mapping", "message": "object"}])
    return imports.create_import_job(db, project_id=access.project.id, upload=file.file,
                                     filename=file.filename or "upload.jsonl", fmt=format,
                                     mapping=parsed, mode=mode, actor_id=access.user.id)


@router.get("/imports/{import_id}", response_model=schemas.ImportRead)
def get_import(import_id: int, access: ProjectViewer, db: SessionDep):
    return imports.get_import_job(db, project_id=access.project.id, job_id=import_id)
