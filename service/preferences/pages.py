"""Browser pages for pairwise review: the keyboard-first comparison page (``1``/``2`` prefer,
``t`` tie, ``b`` both bad, ``e`` edit the preferred answer, ``r`` a reason, Enter sends) and the
lead's adjudication page with the annotators' agreement; the preference evaluations' reports
(reward accuracy, win rate) beside the other evaluation pages. User text is rendered escaped (Jinja
autoescape; preferences.js only sets textContent/value)."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from service.core.deps import ProjectAnnotator, ProjectLead, ProjectViewer, SessionDep, writes_db
from service.core.templating import render
from service.evaluation import preference as preference_eval
from service.models import Chunk, PreferenceEvalRun, PreferenceItem, Role, User
from service.preferences import review as preferences_review
from service.preferences import service as preferences_service
from service.projects.pages import add_tab

router = APIRouter(include_in_schema=False)
add_tab("/preferences", "Pairs", order=45, min_role=Role.annotator)
add_tab("/preferences/adjudicate", "Pair adjudication", order=65, min_role=Role.lead)
add_tab("/evaluation/preferences", "Preference evaluation", order=105)


def _pair_context(db: SessionDep, item: PreferenceItem) -> dict[str, Any]:
    shown = preferences_service.display_order(item.id, preferences_service.candidates_of(db, item.id))[:2]
    chunk = db.get(Chunk, item.chunk_id) if item.chunk_id else None
    return {"item": item, "shown": shown,
            "chunk_text": (chunk.redacted_text or chunk.text) if chunk is not None else None,
            "data": {"item_id": item.id, "candidates": [{"id": c.id, "content": c.content}
                                                        for c in shown]}}


@router.get("/projects/{project_id}/preferences", response_class=HTMLResponse)
@writes_db  # leases the item it shows
def pair_review_page(request: Request, access: ProjectAnnotator, db: SessionDep,
                     item: int | None = None):
    current = (preferences_service.get_item(db, project_id=access.project.id, item_id=item)
               if item is not None else
               preferences_review.next_item(db, project_id=access.project.id,
                                            annotator_id=access.user.id))
    context: dict[str, Any] = {"item": None, "mode": "review"}
    if current is not None:
        context = {**_pair_context(db, current), "mode": "review"}
        context["data"]["action"] = (f"/api/v1/projects/{access.project.id}/preference-items/"
                                     f"{current.id}/decision")
        context["data"]["after"] = f"/projects/{access.project.id}/preferences"
    counts = preferences_service.status_counts(db, project_id=access.project.id)
    return render(request, "pages/preferences.html", counts=counts, **context)


@router.get("/projects/{project_id}/preferences/adjudicate", response_class=HTMLResponse)
def pair_adjudicate_page(request: Request, access: ProjectLead, db: SessionDep,
                         item: int | None = None):
    agreement = preferences_review.agreement(db, project_id=access.project.id)
    if item is None:
        return render(request, "pages/preferences_adjudicate.html", agreement=agreement,
                      items=preferences_review.disputed(db, project_id=access.project.id))
    current = preferences_service.get_item(db, project_id=access.project.id, item_id=item)
    context = _pair_context(db, current)
    decisions = preferences_service.decisions_of(db, current.id)
    ids = {d.annotator_id for d in decisions}
    emails = dict(db.execute(select(User.id, User.email).where(User.id.in_(ids))).all()) if ids else {}
    side = {c.id: str(i + 1) for i, c in enumerate(context["shown"])}
    context["data"]["action"] = (f"/api/v1/projects/{access.project.id}/preference-items/"
                                 f"{current.id}/adjudicate")
    context["data"]["after"] = f"/projects/{access.project.id}/preferences/adjudicate"
    return render(request, "pages/preferences.html", mode="adjudicate", decisions=decisions,
                  emails=emails, side=side, counts=None, **context)


@router.get("/projects/{project_id}/evaluation/preferences", response_class=HTMLResponse)
def preference_evals_page(request: Request, access: ProjectViewer, db: SessionDep):
    """The project's preference evaluations: reward accuracy and win rate, newest first."""
    runs = list(db.scalars(preference_eval.runs_query(project_id=access.project.id)
                           .order_by(PreferenceEvalRun.id.desc()).limit(200)))
    return render(request, "pages/preference_evals.html", runs=runs,
                  headline=preference_eval.headline)


@router.get("/projects/{project_id}/evaluation/preferences/{run_id}", response_class=HTMLResponse)
def preference_eval_page(request: Request, run_id: int, access: ProjectViewer, db: SessionDep,
                         limit: Annotated[int, Query(ge=1, le=500)] = 100):
    """One evaluation: its numbers with their interval, and the pairs behind them."""
    run = preference_eval.get_run(db, project_id=access.project.id, run_id=run_id)
    items, _ = preference_eval.items_page(db, run.id, limit=limit, cursor=None)
    return render(request, "pages/preference_eval.html", run=run, items=items,
                  headline=preference_eval.headline, roles=preference_eval.ROLES[run.kind])
