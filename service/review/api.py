"""REST for review: next sample, decisions, skip, adjudication, assignment, agreement,
throughput and review settings. Sample edits themselves use the samples API (PATCH + If-Match)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from service.core.config import get_settings
from service.core.deps import ProjectAnnotator, ProjectLead, ProjectViewer, SessionDep, writes_db
from service.core.pagination import CursorQ, LimitQ, Page, page
from service.models import ReviewDecision
from service.review import bulk as review_bulk
from service.review import schemas
from service.review import service as review_service
from service.samples import service as samples_service
from service.samples.schemas import SampleSort

router = APIRouter(prefix="/api/v1/projects/{project_id}/review", tags=["review"])


SORT_HELP = ("queue order within 'assigned to me' and 'unassigned': one of "
             + ", ".join(samples_service.SORTS) + " (default id)")


def skip_cookie(project_id: int) -> str:
    return f"annotune_skip_{project_id}"


def sort_cookie(project_id: int) -> str:
    """The review page's chosen queue order, kept for the browser session (the keyboard flow
    moves on to ``/review`` without a query string)."""
    return f"annotune_review_sort_{project_id}"


SortQ = Annotated[SampleSort | None, Query(description=SORT_HELP)]


def queue_sort(request: Request, project_id: int, sort: str | None) -> str:
    """An explicit ``sort`` (422 when unknown), else the page's remembered one, else id."""
    if sort:
        return samples_service.check_sort(str(sort))
    remembered = request.cookies.get(sort_cookie(project_id))
    return remembered if remembered in samples_service.SORTS else samples_service.DEFAULT_SORT


def set_sort_cookie(response: Response, project_id: int, sort: str) -> None:
    response.set_cookie(sort_cookie(project_id), sort, httponly=True, samesite="lax",
                        secure=get_settings().session_cookie_secure, path="/")


def skipped_ids(request: Request, project_id: int) -> list[int]:
    return review_service.parse_skip(request.cookies.get(skip_cookie(project_id)))


def set_skip_cookie(response: Response, project_id: int, ids: list[int]) -> None:
    # a browser-session cookie: the skip list lives as long as the browser session
    response.set_cookie(skip_cookie(project_id), review_service.format_skip(ids), httponly=True,
                        samesite="lax", secure=get_settings().session_cookie_secure, path="/")


@router.get("/next", response_model=schemas.NextSample)
@writes_db  # leases the sample it hands out
def next_sample(request: Request, access: ProjectAnnotator, db: SessionDep,
                sort: SortQ = None):
    overlap = review_service.review_settings(access.project).review_overlap
    sample = review_service.next_sample(db, project_id=access.project.id, user_id=access.user.id,
                                        overlap=overlap,
                                        sort=queue_sort(request, access.project.id, sort),
                                        skip_ids=skipped_ids(request, access.project.id))
    return {"sample": sample}


@router.post("/samples/{sample_id}/decision", response_model=schemas.DecisionResult)
def decide(sample_id: int, body: schemas.DecisionCreate, access: ProjectAnnotator, db: SessionDep):
    # held for the whole request: the session's identity map keeps it only while referenced,
    # so the lookups in decide() and update_sample() reuse it instead of loading it again
    sample = samples_service.get_sample(db, project_id=access.project.id, sample_id=sample_id)
    review_service.check_decider(sample, access)
    return review_service.decide(db, project=access.project, sample_id=sample_id,
                                 reviewer_id=access.user.id, decision=body.decision,
                                 expected_version=body.version, reason=body.reason,
                                 messages=body.messages)


@router.post("/samples/{sample_id}/skip", response_model=schemas.SkipResult)
def skip(sample_id: int, request: Request, response: Response, access: ProjectAnnotator,
         db: SessionDep, sort: SortQ = None):
    sort = queue_sort(request, access.project.id, sort)
    samples_service.get_sample(db, project_id=access.project.id, sample_id=sample_id)
    ids = [i for i in skipped_ids(request, access.project.id) if i != sample_id] + [sample_id]
    set_skip_cookie(response, access.project.id, ids)
    review_service.release_lease(db, sample_id=sample_id, user_id=access.user.id)
    overlap = review_service.review_settings(access.project).review_overlap
    nxt = review_service.next_sample(db, project_id=access.project.id, user_id=access.user.id,
                                     overlap=overlap, skip_ids=ids, exclude_ids=[sample_id],
                                     sort=sort)
    return {"skipped": ids[-review_service.SKIP_KEEP:], "next": nxt}


@router.get("/samples/{sample_id}/decisions", response_model=Page[schemas.DecisionRead])
def sample_decisions(sample_id: int, access: ProjectLead, db: SessionDep, limit: LimitQ = 100,
                     cursor: CursorQ = None):
    # leads only: reviewers in double review must not see each other's decisions
    samples_service.get_sample(db, project_id=access.project.id, sample_id=sample_id)
    return page(db, select(ReviewDecision).where(ReviewDecision.sample_id == sample_id),
                ReviewDecision.id, limit=limit, cursor=cursor)


@router.post("/samples/{sample_id}/adjudicate", response_model=schemas.DecisionResult)
def adjudicate(sample_id: int, body: schemas.DecisionCreate, access: ProjectLead, db: SessionDep):
    sample = review_service.adjudicate(db, project_id=access.project.id, sample_id=sample_id,
                                       actor_id=access.user.id, decision=body.decision,
                                       expected_version=body.version, reason=body.reason,
                                       messages=body.messages)
    return {"sample": sample, "resolved": True, "flagged": False, "decisions": 0}


BULK_STARTED = {202: {"model": schemas.BulkJobStarted,
                      "description": "more samples than one request changes: a background job "
                                     "started (poll its status_url)"}}


def bulk_answer(result: dict) -> dict | JSONResponse:
    """A bulk change or assignment's answer: the counts (200, the route's model), or the job
    it started (202)."""
    if "job_id" in result:
        job = schemas.BulkJobStarted.model_validate(result)
        return JSONResponse(job.model_dump(mode="json"), status_code=202)
    return result


@router.post("/assign", response_model=schemas.AssignResult, responses=BULK_STARTED)
def assign(body: schemas.AssignRequest, access: ProjectLead, db: SessionDep):
    """Assign now (200), or above ``review_bulk.TASK_THRESHOLD`` samples start a job (202)."""
    flt = samples_service.SampleFilter(**body.filter.model_dump(mode="json"))
    result = review_service.assign(db, project_id=access.project.id, actor_id=access.user.id,
                                   flt=flt, annotator_ids=body.annotator_ids, mode=body.mode,
                                   count=body.count, dry_run=body.dry_run)
    return bulk_answer(result)


@router.get("/jobs/{job_id}", response_model=schemas.BulkJobRead)
def bulk_job(job_id: str, access: ProjectLead, db: SessionDep) -> dict:
    """Progress of a bulk change or assignment running as a task (the page polls this)."""
    return review_bulk.get_job(db, project_id=access.project.id, job_id=job_id)


@router.get("/agreement", response_model=schemas.ReviewAgreement)
def agreement(access: ProjectViewer, db: SessionDep) -> dict:
    return review_service.agreement(db, project_id=access.project.id)


@router.get("/throughput", response_model=schemas.ThroughputRead)
def throughput(access: ProjectViewer, db: SessionDep, days: int = 14) -> dict:
    return review_service.throughput(db, project_id=access.project.id, days=max(1, min(days, 365)))


@router.get("/progress", response_model=schemas.ProgressRead)
def progress(access: ProjectViewer, db: SessionDep) -> dict:
    return review_service.progress(db, project=access.project)


@router.get("/settings", response_model=schemas.ReviewSettingsRead)
def get_settings_(access: ProjectViewer):
    return review_service.review_settings(access.project).as_dict()


@router.put("/settings", response_model=schemas.ReviewSettingsRead)
def put_settings(body: schemas.ReviewSettingsUpdate, access: ProjectLead, db: SessionDep):
    return review_service.update_review_settings(
        db, access.project, reject_reasons=body.reject_reasons,
        target_accepted=body.target_accepted, clear_target=body.clear_target,
        review_overlap=body.review_overlap).as_dict()
