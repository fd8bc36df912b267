"""REST for review: next sample, decisions, skip, adjudication, assignment, agreement,
throughput and review settings. Sample edits themselves use the samples API (PATCH + If-Match)."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.core.config import get_settings
from service.core.deps import ProjectAnnotator, ProjectLead, ProjectViewer, SessionDep
from service.review import schemas
from service.review import service as review_service
from service.samples import service as samples_service

router = APIRouter(prefix="/api/v1/projects/{project_id}/review", tags=["review"])


def skip_cookie(project_id: int) -> str:
    return f"annotune_skip_{project_id}"


def skipped_ids(request: Request, project_id: int) -> list[int]:
    return review_service.parse_skip(request.cookies.get(skip_cookie(project_id)))


def set_skip_cookie(response: Response, project_id: int, ids: list[int]) -> None:
    # a browser-session cookie: the skip list lives as long as the browser session
    response.set_cookie(skip_cookie(project_id), review_service.format_skip(ids), httponly=True,
                        samesite="lax", secure=get_settings().session_cookie_secure, path="/")


@router.get("/next", response_model=schemas.NextSample)
def next_sample(request: Request, access: ProjectAnnotator, db: SessionDep):
    overlap = review_service.review_settings(access.project).review_overlap
    sample = review_service.next_sample(db, project_id=access.project.id, user_id=access.user.id,
                                        overlap=overlap,
                                        skip_ids=skipped_ids(request, access.project.id))
    return {"sample": sample}


@router.post("/samples/{sample_id}/decision", response_model=schemas.DecisionResult)
def decide(sample_id: int, body: schemas.DecisionCreate, access: ProjectAnnotator, db: SessionDep):
    return review_service.decide(db, project=access.project, sample_id=sample_id,
                                 reviewer_id=access.user.id, decision=body.decision,
                                 expected_version=body.version, reason=body.reason,
                                 messages=body.messages)


@router.post("/samples/{sample_id}/skip", response_model=schemas.SkipResult)
def skip(sample_id: int, request: Request, response: Response, access: ProjectAnnotator,
         db: SessionDep):
    samples_service.get_sample(db, project_id=access.project.id, sample_id=sample_id)
    ids = [i for i in skipped_ids(request, access.project.id) if i != sample_id] + [sample_id]
    set_skip_cookie(response, access.project.id, ids)
    overlap = review_service.review_settings(access.project).review_overlap
    nxt = review_service.next_sample(db, project_id=access.project.id, user_id=access.user.id,
                                     overlap=overlap, skip_ids=ids, exclude_ids=[sample_id])
    return {"skipped": ids[-review_service.SKIP_KEEP:], "next": nxt}


@router.get("/samples/{sample_id}/decisions", response_model=list[schemas.DecisionRead])
def sample_decisions(sample_id: int, access: ProjectLead, db: SessionDep):
    # leads only: reviewers in double review must not see each other's decisions
    return review_service.decisions_for(db, project_id=access.project.id, sample_id=sample_id)


@router.post("/samples/{sample_id}/adjudicate", response_model=schemas.DecisionResult)
def adjudicate(sample_id: int, body: schemas.DecisionCreate, access: ProjectLead, db: SessionDep):
    sample = review_service.adjudicate(db, project_id=access.project.id, sample_id=sample_id,
                                       actor_id=access.user.id, decision=body.decision,
                                       expected_version=body.version, reason=body.reason,
                                       messages=body.messages)
    return {"sample": sample, "resolved": True, "flagged": False, "decisions": 0}


@router.post("/assign")
def assign(body: schemas.AssignRequest, access: ProjectLead, db: SessionDep) -> dict:
    flt = samples_service.SampleFilter(**body.filter.model_dump())
    return review_service.assign(db, project_id=access.project.id, actor_id=access.user.id,
                                 flt=flt, annotator_ids=body.annotator_ids, mode=body.mode,
                                 count=body.count, dry_run=body.dry_run)


@router.get("/agreement")
def agreement(access: ProjectViewer, db: SessionDep) -> dict:
    return review_service.agreement(db, project_id=access.project.id)


@router.get("/throughput")
def throughput(access: ProjectViewer, db: SessionDep, days: int = 14) -> dict:
    return review_service.throughput(db, project_id=access.project.id, days=max(1, min(days, 365)))


@router.get("/progress")
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
