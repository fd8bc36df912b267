"""Browser pages for samples: the filtered list (keyset pages, bulk actions, assignment),
one sample with its revision history as diffs, and the import form and report.

The review routers (``service.review.api`` and ``service.review.pages``) are mounted here
too, so the app picks them up through the samples package it already registers."""
from __future__ import annotations

import difflib
import math
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from service.core.deps import ProjectLead, ProjectViewer, SessionDep
from service.core.errors import AppError, Invalid
from service.core.templating import render
from service.models import ImportJob, Membership, Role, User
from service.review import pages as review_pages
from service.review import source as review_source
from service.samples import imports
from service.samples import service as samples_service
from service.samples.formats import FORMATS

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


def _int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def _float(value: str | None) -> float | None:
    """A finite number from a form field, else None (empty, not a number, nan, inf)."""
    try:
        number = float(value) if value and value.strip() else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def filter_from_query(request: Request) -> tuple[samples_service.SampleFilter, dict[str, Any]]:
    """The list page's filter from its query string; empty form fields mean 'any'."""
    qp = request.query_params
    statuses = [s for s in qp.getlist("status") if s in samples_service.STATUSES]
    assignee = (qp.get("assignee") or "").strip()
    spec: dict[str, Any] = {
        "status": statuses, "tag": (qp.get("tag") or "").strip() or None,
        "document_id": _int(qp.get("document_id")),
        "generation_job_id": _int(qp.get("generation_job_id")),
        "import_job_id": _int(qp.get("import_job_id")),
        "domain_leaf_id": _int(qp.get("domain_leaf_id")),
        "assignee_id": _int(assignee) if assignee != "none" else None,
        "unassigned": assignee == "none", "reviewer_id": _int(qp.get("reviewer")),
        "q": (qp.get("q") or "").strip() or None,
        "score_key": (qp.get("score_key") or "judge").strip() or "judge",
        "score_min": _float(qp.get("score_min")), "score_max": _float(qp.get("score_max")),
    }
    if spec["score_min"] is None and spec["score_max"] is None:
        spec["score_key"] = None
    return samples_service.SampleFilter(**spec), spec


def _preview(messages: list[dict[str, str]], role: str, limit: int = 160) -> str:
    for m in messages:
        if m.get("role") == role:
            text = " ".join(m.get("content", "").split())
            return text if len(text) <= limit else text[:limit - 1] + "…"
    return ""


def _members(db, project_id: int) -> list[tuple[int, str, str]]:
    """(user id, email, role) of every member, in one query."""
    rows = db.execute(select(Membership.user_id, User.email, Membership.role)
                      .join(User, User.id == Membership.user_id)
                      .where(Membership.project_id == project_id).order_by(User.email)).all()
    return [tuple(r) for r in rows]


SORT_LABELS = {"-id": "newest first", "id": "oldest first",
               "-updated_at": "recently updated first", "updated_at": "least recently updated first",
               "-created_at": "recently created first", "created_at": "least recently created first"}


@router.get("/projects/{project_id}/samples", response_class=HTMLResponse)
def samples_page(request: Request, access: ProjectViewer, db: SessionDep,
                 cursor: str | None = None, order: str = "desc", sort: str | None = None):
    flt, spec = filter_from_query(request)
    # the page has always opened newest first; ``order=asc`` is the old spelling of ``sort=id``
    sort = sort or ("id" if order == "asc" else "-id")
    status_code = 200
    try:
        items, nxt = samples_service.list_samples(db, project_id=access.project.id, flt=flt,
                                                  limit=PAGE_SIZE, cursor=cursor, sort=sort)
    except Invalid as exc:
        items, nxt = [], None
        field = exc.details[0]["field"] if exc.details else ""
        request.state.list_error = f"{exc.message} ({field}: {exc.details[0]['message']})" if field else exc.message
        status_code = exc.status_code
    members = _members(db, access.project.id)
    emails = {uid: email for uid, email, _ in members}
    rows = [{"s": s, "user": _preview(s.messages, "user"), "assistant": _preview(s.messages, "assistant"),
             "judge": review_pages.judge_of(s.scores), "assignee": emails.get(s.assignee_id),
             "reviewer": emails.get(s.reviewed_by_id)} for s in items]
    query = [(k, v) for k, v in request.query_params.multi_items()
             if k not in ("cursor", "order", "sort") and v != ""] + [("sort", sort)]
    annotators = [(uid, email) for uid, email, role in members if Role(role).at_least(Role.annotator)]
    return render(request, "pages/samples.html", status_code=status_code, rows=rows,
                  next_cursor=nxt, spec=spec, raw=request.query_params, query=query, sort=sort,
                  sort_labels=SORT_LABELS, members=members,
                  annotators=annotators, statuses=sorted(samples_service.STATUSES),
                  can_manage=access.at_least(Role.lead), can_review=access.at_least(Role.annotator),
                  error=getattr(request.state, "list_error", None),
                  filter_json={k: v for k, v in spec.items() if v not in (None, [], False)})


def _diff(before: list[dict[str, str]] | None, after: list[dict[str, str]]) -> list[tuple[str, str]]:
    def lines(msgs):
        out = []
        for m in msgs or []:
            out.append(f"[{m.get('role')}]")
            out.extend(m.get("content", "").splitlines() or [""])
        return out

    if before is None:
        return [("add", line) for line in lines(after)]
    if before == after:
        return []
    out = []
    for line in difflib.unified_diff(lines(before), lines(after), lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "ctx")
        out.append((kind, line[1:] if kind in ("add", "del", "ctx") else line))
    return out


@router.get("/projects/{project_id}/samples/{sample_id}", response_class=HTMLResponse)
def sample_page(request: Request, sample_id: int, access: ProjectViewer, db: SessionDep):
    sample = samples_service.get_sample(db, project_id=access.project.id, sample_id=sample_id)
    revisions = samples_service.history(db, project_id=access.project.id, sample_id=sample_id)
    actor_ids = {r.actor_id for r in revisions if r.actor_id}
    emails = dict(db.execute(select(User.id, User.email).where(User.id.in_(actor_ids))).all()) if actor_ids else {}
    history = [{"r": r, "who": emails.get(r.actor_id, "system"), "diff": _diff(r.messages_before, r.messages_after)}
               for r in reversed(revisions)]
    return render(request, "pages/samples_detail.html", sample=sample, history=history,
                  judge=review_pages.judge_of(sample.scores),
                  source=review_source.source_for(db, sample),
                  can_review=access.at_least(Role.annotator))


# -- imports -----------------------------------------------------------------------------------

def _import_form(request: Request, access, db, *, error: str | None = None, status_code: int = 200,
                 values: dict[str, str] | None = None) -> HTMLResponse:
    recent = list(db.scalars(select(ImportJob).where(ImportJob.project_id == access.project.id)
                             .order_by(ImportJob.id.desc()).limit(20)))
    return render(request, "pages/import.html", status_code=status_code, error=error,
                  formats=FORMATS, recent=recent, values=values or {})


@router.get("/projects/{project_id}/imports/new", response_class=HTMLResponse)
def import_form(request: Request, access: ProjectLead, db: SessionDep):
    return _import_form(request, access, db)


@router.post("/projects/{project_id}/imports/new", response_class=HTMLResponse)
def import_submit(request: Request, access: ProjectLead, db: SessionDep,
                  file: Annotated[UploadFile | None, File()] = None,
                  format: Annotated[str, Form()] = "", mapping: Annotated[str, Form()] = "",
                  mode: Annotated[str, Form()] = "strict"):
    import json

    values = {"format": format, "mapping": mapping, "mode": mode}
    if file is None or not file.filename:
        return _import_form(request, access, db, error="choose a file to import", status_code=422,
                            values=values)
    parsed = None
    if mapping.strip():
        try:
            parsed = json.loads(mapping)
        except ValueError as exc:
            return _import_form(request, access, db, error=f"mapping is not valid JSON: {exc}",
                                status_code=422, values=values)
        if not isinstance(parsed, dict):
            return _import_form(request, access, db, error="mapping must be a JSON object",
                                status_code=422, values=values)
    try:
        # validates before it writes anything (no savepoint: its commit would send the task early)
        job = imports.create_import_job(db, project_id=access.project.id, upload=file.file,
                                        filename=file.filename, fmt=format or None,
                                        mapping=parsed, mode=mode, actor_id=access.user.id)
    except AppError as exc:
        return _import_form(request, access, db, error=exc.message, status_code=exc.status_code,
                            values=values)
    return RedirectResponse(f"/projects/{access.project.id}/imports/{job.id}", status_code=303)


@router.get("/projects/{project_id}/imports/{import_id}", response_class=HTMLResponse)
def import_page(request: Request, import_id: int, access: ProjectViewer, db: SessionDep):
    job = imports.get_import_job(db, project_id=access.project.id, job_id=import_id)
    report = (job.report or [])[:1000]
    return render(request, "pages/import_detail.html", job=job, report=report,
                  report_total=len(job.report or []))
