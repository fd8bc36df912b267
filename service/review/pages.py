"""Browser pages for review: the keyboard-first queue, the progress dashboard, adjudication
and review settings. Everything user-written is rendered escaped (Jinja autoescape; the
editor is built by review.js with textContent/value only)."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from service.core.deps import ProjectAnnotator, ProjectLead, ProjectViewer, SessionDep
from service.core.errors import AppError
from service.core.templating import render
from service.models import Role, User
from service.projects.pages import PROJECT_STATS, add_tab
from service.review import service as review_service
from service.review import source as review_source
from service.review.api import queue_sort, set_sort_cookie, skipped_ids
from service.samples import service as samples_service

router = APIRouter(include_in_schema=False)
QUEUE_SORT_LABELS = {"id": "oldest first (id)", "-id": "newest first (id)",
                     "created_at": "created earliest first", "-created_at": "created latest first",
                     "updated_at": "least recently updated first",
                     "-updated_at": "most recently updated first"}

add_tab("/samples", "Samples", order=30)
add_tab("/review", "Review", order=40, min_role=Role.annotator)
add_tab("/review/dashboard", "Progress", order=50)
add_tab("/review/adjudicate", "Adjudication", order=60, min_role=Role.lead)
add_tab("/imports/new", "Import", order=70, min_role=Role.lead)
add_tab("/review/settings", "Review settings", order=110, min_role=Role.lead)
if review_service.project_stats not in PROJECT_STATS:
    PROJECT_STATS.append(review_service.project_stats)


def judge_of(scores: dict[str, Any] | None) -> dict[str, Any] | None:
    """``Sample.scores["judge"]`` as ``{score, rationale}``: a number or an object."""
    raw = (scores or {}).get("judge")
    if raw is None:
        return None
    if isinstance(raw, dict):
        return {"score": raw.get("score"), "rationale": raw.get("rationale") or raw.get("reason")}
    return {"score": raw, "rationale": (scores or {}).get("judge_rationale")}


def sample_payload(sample) -> dict[str, Any]:
    return {"id": sample.id, "version": sample.version, "status": sample.status,
            "messages": sample.messages, "reasoning": sample.reasoning, "tags": sample.tags,
            "reject_reason": sample.reject_reason, "assignee_id": sample.assignee_id}


@router.get("/projects/{project_id}/review", response_class=HTMLResponse)
def review_page(request: Request, access: ProjectAnnotator, db: SessionDep, sample: int | None = None,
                sort: str | None = None):
    settings = review_service.review_settings(access.project)
    order = queue_sort(request, access.project.id, sort)  # 422 naming query.sort when unknown
    if sample is not None:
        current = samples_service.get_sample(db, project_id=access.project.id, sample_id=sample)
    else:
        current = review_service.next_sample(db, project_id=access.project.id,
                                             user_id=access.user.id, overlap=settings.review_overlap,
                                             skip_ids=skipped_ids(request, access.project.id),
                                             sort=order)
    source = review_source.source_for(db, current) if current else None
    data = {"project_id": access.project.id, "user_id": access.user.id,
            "sample": sample_payload(current) if current else None,
            "reject_reasons": settings.reject_reasons, "overlap": settings.review_overlap}
    response = render(request, "pages/review.html", sample=current, source=source, data=data,
                      judge=judge_of(current.scores) if current else None, settings=settings,
                      sort=order, sort_labels=QUEUE_SORT_LABELS)
    if sort:
        set_sort_cookie(response, access.project.id, order)
    return response


@router.get("/projects/{project_id}/review/dashboard", response_class=HTMLResponse)
def dashboard_page(request: Request, access: ProjectViewer, db: SessionDep):
    progress = review_service.progress(db, project=access.project)
    throughput = review_service.throughput(db, project_id=access.project.id, days=14)
    agreement = review_service.agreement(db, project_id=access.project.id)
    agree_by = {r["reviewer_id"]: r for r in agreement["reviewers"]}
    return render(request, "pages/review_dashboard.html", progress=progress,
                  throughput=throughput, agreement=agreement, agree_by=agree_by,
                  settings=review_service.review_settings(access.project))


@router.get("/projects/{project_id}/review/adjudicate", response_class=HTMLResponse)
def adjudicate_page(request: Request, access: ProjectLead, db: SessionDep,
                    sample: int | None = None, cursor: str | None = None, sort: str | None = None):
    if sample is None:
        items, nxt = review_service.flagged(db, project_id=access.project.id, limit=50,
                                            cursor=cursor, sort=sort)
        return render(request, "pages/review_adjudicate.html", items=items, next_cursor=nxt,
                      current=None, sort=samples_service.check_sort(sort))
    current = samples_service.get_sample(db, project_id=access.project.id, sample_id=sample)
    decisions = review_service.decisions_for(db, project_id=access.project.id, sample_id=sample)
    emails = {u.id: u.email for u in db.query(User).filter(User.id.in_({d.reviewer_id for d in decisions}))} if decisions else {}
    data = {"project_id": access.project.id, "sample": sample_payload(current),
            "decisions": [{"id": d.id, "reviewer": emails.get(d.reviewer_id, str(d.reviewer_id)),
                           "decision": d.decision, "reason": d.reason, "messages": d.messages}
                          for d in decisions],
            "reject_reasons": review_service.review_settings(access.project).reject_reasons}
    return render(request, "pages/review_adjudicate.html", items=[], next_cursor=None,
                  current=current, decisions=decisions, emails=emails, data=data,
                  source=review_source.source_for(db, current))


def _settings_page(request: Request, access, *, error: str | None = None, message: str | None = None,
                   status_code: int = 200) -> HTMLResponse:
    return render(request, "pages/review_settings.html", status_code=status_code,
                  settings=review_service.review_settings(access.project), error=error,
                  message=message)


@router.get("/projects/{project_id}/review/settings", response_class=HTMLResponse)
def settings_page(request: Request, access: ProjectLead):
    return _settings_page(request, access)


@router.post("/projects/{project_id}/review/settings", response_class=HTMLResponse)
def settings_form(request: Request, access: ProjectLead, db: SessionDep,
                  reject_reasons: Annotated[str, Form()] = "",
                  target_accepted: Annotated[str, Form()] = "",
                  review_overlap: Annotated[str, Form()] = "1"):
    try:
        target = int(target_accepted) if target_accepted.strip() else None
        overlap = int(review_overlap or "1")
    except ValueError:
        return _settings_page(request, access, error="target and overlap must be whole numbers",
                              status_code=422)
    try:
        with db.begin_nested():
            review_service.update_review_settings(
                db, access.project, reject_reasons=reject_reasons.splitlines(),
                target_accepted=target, clear_target=target is None, review_overlap=overlap)
    except AppError as exc:
        return _settings_page(request, access, error=exc.message, status_code=exc.status_code)
    return RedirectResponse(f"/projects/{access.project.id}/review/settings?saved=1", status_code=303)


__all__ = ["Role", "judge_of", "router", "sample_payload"]
