"""REST for preference data: comparison items, pairwise decisions and adjudication, agreement,
candidate generation jobs, preference versions and their exports, and evaluations on a
version's held-out split (reward accuracy, judged win rate)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from service.core.deps import ProjectAnnotator, ProjectLead, ProjectViewer, SessionDep, writes_db
from service.core.openapi import file_media, file_response
from service.core.pagination import CursorQ, LimitQ, Page, page
from service.evaluation import preference as preference_eval
from service.models import PreferenceDecision, PreferenceEvalRun
from service.models.preference import ItemStatus
from service.preferences import export as preferences_export
from service.preferences import review as preferences_review
from service.preferences import schemas
from service.preferences import service as preferences_service
from service.preferences import versions as preferences_versions

router = APIRouter(prefix="/api/v1/projects/{project_id}", tags=["preferences"])
NOT_FOUND = {404: {"description": "not found in this project"}}


@router.post("/preference-items", response_model=schemas.ItemRead,
             status_code=status.HTTP_201_CREATED)
def create_item(body: schemas.ItemCreate, access: ProjectLead, db: SessionDep):
    """A comparison item: a prompt, its source chunk and (optionally) its candidates."""
    item = preferences_service.create_item(
        db, project_id=access.project.id, prompt=[m.model_dump() for m in body.prompt],
        candidates=[c.model_dump() for c in body.candidates], chunk_id=body.chunk_id,
        actor_id=access.user.id)
    return preferences_service.item_read(db, item)


@router.post("/preference-items/import", response_model=schemas.ImportResult)
def import_items(body: schemas.ItemImport, access: ProjectLead, db: SessionDep):
    """Decided pairs (TRL's ``prompt``/``chosen``/``rejected``) or items to review
    (``prompt``/``candidates``); bad records are reported by index."""
    return preferences_service.import_items(db, project_id=access.project.id,
                                            records=body.records, actor_id=access.user.id)


@router.post("/preference-items/from-samples", response_model=list[schemas.ItemRead])
def items_from_samples(body: schemas.FromSamples, access: ProjectLead, db: SessionDep):
    """Items from accepted SFT samples (their answer is candidate 0; a generation job drafts
    the rival, e.g. from a trained model)."""
    items = preferences_service.items_from_samples(
        db, project_id=access.project.id, sample_ids=body.sample_ids, limit=body.limit,
        actor_id=access.user.id)
    return [preferences_service.item_read(db, i) for i in items]


@router.get("/preference-items", response_model=Page[schemas.ItemRead])
def list_items(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None,
               status_: Annotated[ItemStatus | None, Query(alias="status")] = None):
    items, nxt = preferences_service.list_items(db, project_id=access.project.id,
                                                status=status_.value if status_ else None,
                                                limit=limit, cursor=cursor)
    return {"items": [preferences_service.item_read(db, i) for i in items], "next_cursor": nxt}


@router.get("/preference-items/{item_id}", response_model=schemas.ItemRead, responses=NOT_FOUND)
def get_item(item_id: int, access: ProjectViewer, db: SessionDep):
    item = preferences_service.get_item(db, project_id=access.project.id, item_id=item_id)
    return preferences_service.item_read(db, item)


@router.get("/preference-items/{item_id}/decisions", response_model=Page[schemas.DecisionRead],
            responses=NOT_FOUND)
def item_decisions(item_id: int, access: ProjectLead, db: SessionDep, limit: LimitQ = 100,
                   cursor: CursorQ = None):
    """Every annotator's decision on the item (leads: for adjudication)."""
    preferences_service.get_item(db, project_id=access.project.id, item_id=item_id)
    return page(db, select(PreferenceDecision).where(PreferenceDecision.item_id == item_id),
                PreferenceDecision.id, limit=limit, cursor=cursor)


@router.post("/preference-items/{item_id}/decision", response_model=schemas.ItemRead,
             responses=NOT_FOUND)
def decide(item_id: int, body: schemas.DecisionCreate, access: ProjectAnnotator, db: SessionDep):
    """This annotator's pairwise decision (a later one replaces it)."""
    item = preferences_service.get_item(db, project_id=access.project.id, item_id=item_id)
    preferences_review.decide(db, project=access.project, item=item, annotator_id=access.user.id,
                              **body.model_dump())
    return preferences_service.item_read(db, item)


@router.post("/preference-items/{item_id}/adjudicate", response_model=schemas.ItemRead,
             responses=NOT_FOUND)
def adjudicate(item_id: int, body: schemas.DecisionCreate, access: ProjectLead, db: SessionDep):
    """A lead's final decision on an item."""
    item = preferences_service.get_item(db, project_id=access.project.id, item_id=item_id)
    preferences_review.adjudicate(db, item=item, lead_id=access.user.id, **body.model_dump())
    return preferences_service.item_read(db, item)


@router.get("/preference-review/next", response_model=schemas.ItemRead | None)
@writes_db  # leases the item it hands out
def next_item(access: ProjectAnnotator, db: SessionDep):
    """The next item waiting for this annotator's decision, reserved for them for a while so
    other annotators get other pairs (null when none is left)."""
    item = preferences_review.next_item(db, project_id=access.project.id,
                                        annotator_id=access.user.id)
    return preferences_service.item_read(db, item) if item else None


@router.get("/preference-review/agreement", response_model=schemas.AgreementRead)
def agreement(access: ProjectViewer, db: SessionDep):
    """Cohen's kappa between annotators on the items they both decided."""
    return preferences_review.agreement(db, project_id=access.project.id)


@router.post("/preference-generation-jobs", response_model=schemas.GenerationRead,
             status_code=status.HTTP_201_CREATED)
def create_generation_job(body: schemas.GenerationCreate, access: ProjectLead, db: SessionDep):
    """Draft the missing candidates of items: candidate ``i`` from ``sources[i]``."""
    return preferences_service.create_generation_job(
        db, project_id=access.project.id, sources=[s.model_dump() for s in body.sources],
        item_ids=body.item_ids, actor_id=access.user.id)


@router.post("/preference-items/prerank", response_model=schemas.GenerationRead,
             status_code=status.HTTP_201_CREATED)
def prerank_items(body: schemas.PrerankCreate, access: ProjectLead, db: SessionDep):
    """A job in which an LLM judge pre-ranks each item's pair (``item.judge``); follow it at
    ``/preference-generation-jobs/{id}``."""
    return preferences_service.create_prerank_job(
        db, project_id=access.project.id, judge_provider_id=body.judge_provider_id,
        item_ids=body.item_ids, params=body.params, actor_id=access.user.id)


@router.get("/preference-generation-jobs/{job_id}", response_model=schemas.GenerationRead,
            responses=NOT_FOUND)
def get_generation_job(job_id: int, access: ProjectViewer, db: SessionDep):
    return preferences_service.get_generation_job(db, project_id=access.project.id, job_id=job_id)


@router.post("/preference-versions", response_model=schemas.VersionRead,
             status_code=status.HTTP_201_CREATED)
def create_version(body: schemas.VersionCreate, access: ProjectLead, db: SessionDep):
    """Freeze the resolved items into a new version (built by a task after commit)."""
    return preferences_versions.create_version(
        db, project_id=access.project.id, name=body.name, split=body.split.model_dump(),
        seed=body.seed, include_both_bad=body.include_both_bad, actor_id=access.user.id)


@router.get("/preference-versions", response_model=Page[schemas.VersionRead])
def list_versions(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None):
    items, nxt = preferences_versions.list_versions(db, project_id=access.project.id, limit=limit,
                                                    cursor=cursor)
    return {"items": items, "next_cursor": nxt}


@router.get("/preference-versions/{version_id}", response_model=schemas.VersionRead,
            responses=NOT_FOUND)
def get_version(version_id: int, access: ProjectViewer, db: SessionDep):
    return preferences_versions.get_version(db, project_id=access.project.id, version_id=version_id)


@router.post("/preference-versions/{version_id}/exports/{fmt}", response_model=schemas.ExportRead,
             responses=NOT_FOUND)
def write_export(version_id: int, fmt: str, access: ProjectLead, db: SessionDep):
    """Write the export (``sharegpt``, ``alpaca``, ``trl`` or ``kto``): the same bytes each time."""
    version = preferences_versions.get_version(db, project_id=access.project.id,
                                               version_id=version_id)
    return preferences_export.write_export(db, version, fmt)


@router.get("/preference-versions/{version_id}/exports/{fmt}/{name}", response_class=FileResponse,
            responses={**NOT_FOUND, **file_response(
                "application/x-ndjson", "application/json",
                description="the file (its type from its suffix)")})
def download_export_file(version_id: int, fmt: str, name: str, access: ProjectViewer,
                         db: SessionDep) -> FileResponse:
    version = preferences_versions.get_version(db, project_id=access.project.id,
                                               version_id=version_id)
    return FileResponse(preferences_export.file_path(version, fmt, name), filename=name,
                        media_type=file_media(name))


@router.post("/preference-evals", response_model=schemas.EvalRead,
             status_code=status.HTTP_201_CREATED)
def create_eval(body: schemas.EvalCreate, access: ProjectLead, db: SessionDep):
    """Reward accuracy of a trained model (against its start model by default) or the judged
    win rate of a candidate over a baseline, on a preference version's held-out split."""
    models = {k: v.model_dump(exclude_none=True) for k, v in body.models if v is not None}
    return preference_eval.create_run(
        db, project_id=access.project.id, preference_version_id=body.preference_version_id,
        kind=body.kind, models=models, split=body.split, name=body.name,
        judge_provider_id=body.judge_provider_id,
        settings=body.settings.model_dump(exclude_none=True), actor_id=access.user.id)


@router.get("/preference-evals", response_model=Page[schemas.EvalRead])
def list_evals(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None,
               training_job_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None):
    return page(db, preference_eval.runs_query(project_id=access.project.id,
                                               training_job_id=training_job_id),
                PreferenceEvalRun.id, limit=limit, cursor=cursor, descending=True)


@router.get("/preference-evals/{run_id}", response_model=schemas.EvalRead, responses=NOT_FOUND)
def get_eval(run_id: int, access: ProjectViewer, db: SessionDep):
    return preference_eval.get_run(db, project_id=access.project.id, run_id=run_id)


@router.post("/preference-evals/{run_id}/cancel", response_model=schemas.EvalRead,
             responses=NOT_FOUND)
def cancel_eval(run_id: int, access: ProjectLead, db: SessionDep):
    """Queued: cancelled now; running: stops between batches. 409 once it has ended."""
    run = preference_eval.get_run(db, project_id=access.project.id, run_id=run_id)
    return preference_eval.cancel_run(db, run)


@router.get("/preference-evals/{run_id}/items", response_model=Page[schemas.EvalItemRead],
            responses=NOT_FOUND)
def eval_items(run_id: int, access: ProjectViewer, db: SessionDep, limit: LimitQ = 50,
               cursor: CursorQ = None):
    """Each pair's scores (log-probabilities and rewards, or both answers and the verdicts)."""
    preference_eval.get_run(db, project_id=access.project.id, run_id=run_id)
    items, nxt = preference_eval.items_page(db, run_id, limit=limit, cursor=cursor)
    return {"items": items, "next_cursor": nxt}
