from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from service.core.deps import CurrentUser, ProjectLead, ProjectViewer, SessionDep
from service.core.openapi import file_response
from service.core.pagination import CursorQ, LimitQ, Page, page, paginate, paginate_items
from service.evaluation import metrics as metrics_mod
from service.evaluation import schemas
from service.evaluation import service as evaluation_service
from service.models import EvalPrediction, EvalRun, JobStatus

router = APIRouter(prefix="/api/v1", tags=["evaluation"])
P = "/projects/{project_id}"
# two to MAX_COMPARE_RUNS ids, comma-separated (spaces allowed around them)
RUN_IDS = rf"^ *[0-9]{{1,19}} *(, *[0-9]{{1,19}} *){{1,{evaluation_service.MAX_COMPARE_RUNS - 1}}}$"


@router.get("/eval-metrics", response_model=Page[schemas.MetricRead])
def list_eval_metrics(user: CurrentUser, limit: LimitQ = 100, cursor: CursorQ = None):
    """The registered metrics (plugins), with their outputs, direction and scale."""
    items, nxt = paginate_items(metrics_mod.list_metrics(), lambda m: m.name, limit=limit,
                                cursor=cursor)
    return {"items": [{"name": m.name, "outputs": list(m.outputs), "kind": m.kind,
                       "higher_is_better": m.higher_is_better, "scale": m.scale,
                       "description": m.description} for m in items], "next_cursor": nxt}


@router.post(P + "/eval-runs", response_model=schemas.EvalRunRead, status_code=status.HTTP_201_CREATED)
def create_eval_run(body: schemas.EvalRunCreate, access: ProjectLead, db: SessionDep):
    return evaluation_service.create_run(
        db, project_id=access.project.id, dataset_version_id=body.dataset_version_id,
        split=body.split, name=body.name, model_kind=body.model_kind, base_model=body.base_model,
        training_job_id=body.training_job_id, provider_id=body.provider_id,
        generation=body.generation.model_dump(), metrics=body.metrics,
        metric_options=body.metric_options, actor_id=access.user.id)


@router.get(P + "/eval-runs", response_model=schemas.EvalRunsPage)
def list_eval_runs(access: ProjectViewer, db: SessionDep, limit: LimitQ = 50, cursor: CursorQ = None,
                   training_job_id: Annotated[int | None, Query(description=(
                       "runs of a training job (the base/adapter pair of evaluate_after)"))] = None,
                   dataset_version_id: int | None = None, status: JobStatus | None = None):
    pid = access.project.id
    stmt = evaluation_service.runs_query(project_id=pid, training_job_id=training_job_id,
                                         dataset_version_id=dataset_version_id,
                                         status=status.value if status else None)
    items, nxt = paginate(db, stmt, EvalRun.id, limit=limit, cursor=cursor, descending=True)
    url = None
    if training_job_id is not None:
        base, adapter = evaluation_service.after_training_runs(db, project_id=pid,
                                                               training_job_id=training_job_id)
        if base is not None and adapter is not None:
            url = evaluation_service.compare_url(pid, [base.id, adapter.id])
    return {"items": items, "next_cursor": nxt, "compare_url": url}


@router.get(P + "/eval-runs/{run_id}", response_model=schemas.EvalRunRead)
def get_eval_run(run_id: int, access: ProjectViewer, db: SessionDep):
    return evaluation_service.get_run(db, project_id=access.project.id, run_id=run_id)


@router.post(P + "/eval-runs/{run_id}/cancel", response_model=schemas.EvalRunRead)
def cancel_eval_run(run_id: int, access: ProjectLead, db: SessionDep):
    """A queued run is cancelled at once; a running one stops between items and ends
    ``cancelled``, keeping its predictions and scored over them. 409 ``run_finished`` when the
    run has already ended."""
    run = evaluation_service.get_run(db, project_id=access.project.id, run_id=run_id)
    return evaluation_service.cancel_run(db, run)


@router.get(P + "/eval-runs/{run_id}/predictions", response_model=Page[schemas.EvalPredictionRead])
def list_eval_predictions(run_id: int, access: ProjectViewer, db: SessionDep, limit: LimitQ = 50,
                          cursor: CursorQ = None,
                          failed: Annotated[bool | None, Query(description=(
                              "true: only items that failed; false: only scored ones"))] = None):
    evaluation_service.get_run(db, project_id=access.project.id, run_id=run_id)
    stmt = select(EvalPrediction).where(EvalPrediction.run_id == run_id)
    if failed is True:
        stmt = stmt.where(EvalPrediction.error.is_not(None))
    elif failed is False:
        stmt = stmt.where(EvalPrediction.error.is_(None))
    return page(db, stmt, EvalPrediction.id, limit=limit, cursor=cursor)


@router.get(P + "/eval-runs/{run_id}/predictions.jsonl", response_class=StreamingResponse,
            responses=file_response("application/x-ndjson", description="one JSON line per item"))
def download_eval_predictions(run_id: int, access: ProjectViewer, db: SessionDep) -> StreamingResponse:
    """One JSON line per item, as LLaMA-Factory's ``generated_predictions.jsonl`` (``prompt``,
    ``predict``, ``label``) plus ``scores``, ``messages`` (the prompt turns) and ids."""
    run = evaluation_service.get_run(db, project_id=access.project.id, run_id=run_id)

    def lines():
        for p in evaluation_service.iter_predictions(run.id):
            yield json.dumps({"prompt": evaluation_service.prompt_text(p.prompt or []),
                              "predict": p.prediction, "label": p.reference, "scores": p.scores,
                              "error": p.error, "sample_id": p.sample_id, "item_id": p.item_id,
                              "messages": p.prompt}, ensure_ascii=False) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
        "Content-Disposition": f'attachment; filename="eval-run-{run.id}-predictions.jsonl"'})


@router.get(P + "/eval-compare", response_model=schemas.EvalComparison)
def compare_eval_runs(access: ProjectViewer, db: SessionDep,
                      runs: Annotated[str, Query(
                          description="two or more run ids (at most 8), comma-separated; the "
                                      "first is the baseline unless baseline= is given",
                          pattern=RUN_IDS, max_length=200)],
                      baseline: int | None = None, sort_metric: str | None = None,
                      seed: int = 0,
                      n_resamples: Annotated[int, Query(ge=100, le=20000)] = 2000) -> dict:
    """Metric table with deltas and paired-bootstrap CIs, win/tie/loss, per-sample list sorted by
    the largest regression. Runs must evaluate the same dataset version and split."""
    ids = evaluation_service.parse_run_ids(runs)
    return evaluation_service.compare(db, project_id=access.project.id, run_ids=ids,
                                      baseline_id=baseline, sort_metric=sort_metric, seed=seed,
                                      n_resamples=n_resamples)
