"""Evaluation runs, the API side: validate and queue, cancel, compare.

A run evaluates one model on one split of a frozen dataset version; the runner that holds it and
writes exactly one prediction per item is ``workers/evaluation/runner.py``. Cancelling a running
run sets ``cancel_requested``; its runner stops between items and closes it as ``cancelled``.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.db import get_sessionmaker, utcnow
from service.core.errors import Conflict, Invalid, NotFound
from service.core.lookup import get_in_project, in_project
from service.evaluation import compare as compare_mod
from service.evaluation import metrics as metrics_mod
from service.evaluation.jobs import kind_for
from service.models import (
    DatasetVersion,
    DatasetVersionItem,
    EvalPrediction,
    EvalRun,
    TrainingJob,
)

log = logging.getLogger(__name__)

DEFAULT_METRICS = ("exact_match", "bleu-4", "rouge", "char_f1")
MODEL_KINDS = ("base", "adapter", "endpoint")
SPLITS = ("train", "validation", "test")
MAX_COMPARE_RUNS = 8
# the per-sample ordering prefers a graded metric over exact match when one was scored
_SORT_PREFERENCE = ("keyword_f1", "rouge-l", "char_f1", "bleu-4")


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, details=[{"field": field, "message": message}])


# -- prompts and metrics -------------------------------------------------------------------------

def split_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """``(prompt, reference)``: the conversation before the final assistant turn, and that turn."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "assistant":
            return [dict(m) for m in messages[:index]], str(messages[index].get("content") or "")
    return [dict(m) for m in messages], ""


def prompt_text(prompt: list[dict[str, Any]]) -> str:
    """A one-string view of a prompt: the user turn alone when there is one, else role-tagged."""
    users = [m for m in prompt if m.get("role") == "user"]
    if len(users) == 1 and all(m.get("role") in ("user", "system") for m in prompt):
        return str(users[0].get("content") or "")
    return "\n".join(f"{m.get('role')}: {m.get('content')}" for m in prompt)


def metric_spec(names: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: options}`` for :func:`metrics.score_sample`; options are keyed by metric or output."""
    spec: dict[str, dict[str, Any]] = {}
    for name in names:
        metric = metrics_mod.get_metric(name)
        spec[name] = dict(options.get(name) or options.get(metric.name) or {})
    return spec


def validate_metrics(names: list[str], options: dict[str, Any]) -> None:
    if not names:
        raise _invalid("body.metrics", "at least one metric is required")
    planned = set()
    for i, name in enumerate(names):
        try:
            metric = metrics_mod.get_metric(name)
        except metrics_mod.MetricError as exc:
            raise _invalid(f"body.metrics.{i}", str(exc)) from exc
        if metric.kind != "reference" or metric.is_async:
            raise _invalid(f"body.metrics.{i}",
                           f"metric {name!r} needs an LLM judge, which evaluation runs do not wire")
        planned.add(metric.name)
    for key, opts in options.items():
        try:
            metric = metrics_mod.get_metric(key)
        except metrics_mod.MetricError as exc:
            raise _invalid(f"body.metric_options.{key}", str(exc)) from exc
        if metric.name not in planned:
            raise _invalid(f"body.metric_options.{key}", f"metric {key!r} is not in metrics")
        if not isinstance(opts, dict):
            raise _invalid(f"body.metric_options.{key}", "options must be an object")
        try:
            inspect.signature(metric.fn).bind("", "", **opts)
        except TypeError as exc:
            raise _invalid(f"body.metric_options.{key}", f"bad options for {key}: {exc}") from exc
        if metric.name == "keywords" and "separators" in opts:
            seps = opts["separators"]
            seps = [seps] if isinstance(seps, str) else seps
            if not isinstance(seps, list) or not seps or not all(isinstance(s, str) and s for s in seps):
                raise _invalid(f"body.metric_options.{key}.separators",
                               "separators must be a non-empty string or list of non-empty strings")


def score(prediction: str, reference: str, spec: dict[str, dict[str, Any]]) -> dict[str, float]:
    return metrics_mod.score_sample(prediction, reference, spec)


# -- runs (API side) -----------------------------------------------------------------------------

def model_label(run: EvalRun) -> str:
    if run.model_kind == "endpoint":
        return f"{run.base_model} @ provider #{run.provider_id}"
    via = f" (local provider #{run.provider_id})" if run.provider_id else ""
    if run.model_kind == "adapter":
        return f"{run.base_model} + adapter (training job #{run.training_job_id}){via}"
    return f"{run.base_model}{via}"


def create_run(db: Session, *, project_id: int, dataset_version_id: int, model_kind: str,
               split: str = "test", name: str = "", base_model: str | None = None,
               training_job_id: int | None = None, provider_id: int | None = None,
               generation: dict[str, Any] | None = None, metrics: list[str] | None = None,
               metric_options: dict[str, Any] | None = None, actor_id: int | None = None,
               enqueue: bool = True, _provider_id: int | None = None) -> EvalRun:
    """A queued run. ``model_kind=endpoint`` with a local provider becomes the local run that
    model stands for (a fine-tuned provider: its training job's adapter; else its model as a
    base), keeping the ``provider_id``."""
    from service.training import service as training_service  # no torch: plain functions

    version = in_project(db, DatasetVersion, dataset_version_id, project_id=project_id)
    if version is None:
        raise _invalid("body.dataset_version_id", "dataset version not found in this project")
    if version.status != "ready":
        raise _invalid("body.dataset_version_id", f"dataset version is {version.status}, not ready")
    if split not in SPLITS:
        raise _invalid("body.split", f"split must be one of {', '.join(SPLITS)}")
    total = db.scalar(select(func.count()).select_from(DatasetVersionItem).where(
        DatasetVersionItem.version_id == version.id, DatasetVersionItem.split == split)) or 0
    if not total:
        raise _invalid("body.split", f"the {split} split of this version is empty")

    if model_kind == "base":
        if not base_model or not base_model.strip():
            raise _invalid("body.base_model", "base_model is required for model_kind=base")
        base_model = base_model.strip()
        problem = training_service.check_base_model(base_model, adapter_ok=_provider_id is not None)
        if problem:
            raise _invalid("body.base_model", problem)
        # a baseline run kept with the job it is the base of
        if (training_job_id is not None
                and in_project(db, TrainingJob, training_job_id, project_id=project_id) is None):
            raise _invalid("body.training_job_id", "training job not found in this project")
        provider_id = _provider_id
    elif model_kind == "adapter":
        if training_job_id is None:
            raise _invalid("body.training_job_id", "training_job_id is required for model_kind=adapter")
        job = in_project(db, TrainingJob, training_job_id, project_id=project_id)
        if job is None:
            raise _invalid("body.training_job_id", "training job not found in this project")
        if job.status != "succeeded" or not (job.artifacts or {}).get("adapter_dir"):
            raise _invalid("body.training_job_id",
                           f"training job is {job.status}; only a succeeded job has an adapter")
        base_model, provider_id = job.base_model, _provider_id
    elif model_kind == "endpoint":
        from service.generation import service as generation_service

        if provider_id is None:
            raise _invalid("body.provider_id", "provider_id is required for model_kind=endpoint")
        try:
            provider = generation_service.get_provider(db, project_id=project_id, provider_id=provider_id)
        except NotFound as exc:
            raise _invalid("body.provider_id", "provider not found in this project") from exc
        if provider.kind == "local":  # runs in the gpu worker, as the local kinds do
            return create_run(
                db, project_id=project_id, dataset_version_id=dataset_version_id, split=split,
                name=name, generation=generation, metrics=metrics, metric_options=metric_options,
                actor_id=actor_id, enqueue=enqueue, _provider_id=provider.id,
                **_local_provider_model(db, project_id, provider))
        base_model, training_job_id = provider.model, None
    else:
        raise _invalid("body.model_kind", f"model_kind must be one of {', '.join(MODEL_KINDS)}")

    names = list(metrics) if metrics else list(DEFAULT_METRICS)
    options = dict(metric_options or {})
    validate_metrics(names, options)
    from service.evaluation.schemas import GenerationSettings

    try:
        settings = GenerationSettings(**(generation or {})).model_dump()
    except ValueError as exc:
        raise _invalid("body.generation", str(exc)) from exc

    run = EvalRun(project_id=project_id, dataset_version_id=version.id, split=split,
                  name=(name or "").strip()[:200], model_kind=model_kind, base_model=base_model,
                  training_job_id=training_job_id, provider_id=provider_id, generation=settings,
                  metrics=names, metric_options=options, status="queued", total=total, done=0,
                  failed=0, aggregate={}, created_by_id=actor_id)
    db.add(run)
    db.flush()
    if not run.name:
        run.name = f"{model_kind}-{run.id}"
    db.flush()
    if enqueue:
        jobs.enqueue(db, kind_for(run), run)
    return run


def _local_provider_model(db: Session, project_id: int, provider: Any) -> dict[str, Any]:
    if provider.training_job_id is not None:
        job = in_project(db, TrainingJob, provider.training_job_id, project_id=project_id)
        if job is None:
            raise _invalid("body.provider_id", "the training job of this provider is gone")
        return {"model_kind": "adapter", "training_job_id": job.id}
    return {"model_kind": "base", "base_model": provider.model}


def get_run(db: Session, *, project_id: int, run_id: int) -> EvalRun:
    return get_in_project(db, EvalRun, run_id, project_id=project_id, what="evaluation run",
                          code="run_not_found")


def cancel_run(db: Session, run: EvalRun) -> EvalRun:
    """A queued run is cancelled at once; a running one is asked to stop (``cancel_requested``):
    its runner stops between items and closes it as ``cancelled``, scored over what it has.

    Conditional updates, so that a worker claiming or finishing the run at the same moment
    cannot be overwritten: whichever state the row is really in decides.
    """
    if db.execute(update(EvalRun).where(EvalRun.id == run.id, EvalRun.status == "queued")
                  .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
                  .execution_options(synchronize_session=False)).rowcount == 0:
        asked = db.execute(update(EvalRun).where(EvalRun.id == run.id, EvalRun.status == "running")
                           .values(cancel_requested=True)
                           .execution_options(synchronize_session=False)).rowcount
        if not asked:
            db.refresh(run)
            raise Conflict(f"evaluation run is already {run.status}", code="run_finished")
    db.flush()
    db.refresh(run)
    return run


def runs_query(*, project_id: int, training_job_id: int | None = None,
               dataset_version_id: int | None = None, status: str | None = None):
    stmt = select(EvalRun).where(EvalRun.project_id == project_id)
    if training_job_id is not None:
        stmt = stmt.where(EvalRun.training_job_id == training_job_id)
    if dataset_version_id is not None:
        stmt = stmt.where(EvalRun.dataset_version_id == dataset_version_id)
    if status:
        stmt = stmt.where(EvalRun.status == status)
    return stmt


def after_training_names(training_job_id: int) -> tuple[str, str]:
    return f"train-{training_job_id}-base", f"train-{training_job_id}-adapter"


def after_training_runs(db: Session, *, project_id: int, training_job_id: int
                        ) -> tuple[EvalRun | None, EvalRun | None]:
    """The (base, adapter) pair created for a training job by :func:`request_after_training`."""
    base_name, adapter_name = after_training_names(training_job_id)
    found = {r.name: r for r in db.scalars(select(EvalRun).where(
        EvalRun.project_id == project_id, EvalRun.training_job_id == training_job_id,
        EvalRun.name.in_((base_name, adapter_name))).order_by(EvalRun.id))}
    return found.get(base_name), found.get(adapter_name)


def compare_url(project_id: int, run_ids: list[int]) -> str:
    return f"/projects/{project_id}/evaluation/compare?runs={','.join(str(i) for i in run_ids)}"


def request_after_training(db: Session, *, training_job_id: int,
                           generation: dict[str, Any] | None = None,
                           metrics: list[str] | None = None) -> list[EvalRun]:
    """Evaluate the base model and base+adapter of a succeeded job on its version's test split.

    Called by the training worker when a job with ``evaluate_after`` succeeds. Creates and
    enqueues two runs named ``train-<id>-base`` and ``train-<id>-adapter`` (both carry the
    ``training_job_id``, so ``GET .../eval-runs?training_job_id=`` finds the pair); idempotent.
    Never raises: the training job has succeeded whatever happens here (problems are logged).
    """
    try:
        with db.begin_nested():
            return _request_after_training(db, training_job_id, generation, metrics)
    except Exception:
        log.exception("could not request the evaluation after training job %s", training_job_id)
        return []


def _request_after_training(db: Session, training_job_id: int, generation: dict[str, Any] | None,
                            metrics: list[str] | None) -> list[EvalRun]:
    job = db.get(TrainingJob, training_job_id)
    if job is None or job.status != "succeeded" or not (job.artifacts or {}).get("adapter_dir"):
        log.warning("training job %s has no adapter to evaluate", training_job_id)
        return []
    base, adapter = after_training_runs(db, project_id=job.project_id, training_job_id=job.id)
    if base is not None and adapter is not None:
        return [base, adapter]
    version = db.get(DatasetVersion, job.dataset_version_id)
    if not (version.counts or {}).get("test"):
        log.warning("training job %s: dataset version %s has no test split; nothing to evaluate",
                    job.id, version.id)
        return []
    base_name, adapter_name = after_training_names(job.id)
    common: dict[str, Any] = {"project_id": job.project_id, "dataset_version_id": version.id,
                              "split": "test", "generation": generation, "metrics": metrics,
                              "actor_id": job.created_by_id}
    if base is None:
        base = create_run(db, name=base_name, model_kind="base", base_model=job.base_model,
                          training_job_id=job.id, **common)
    if adapter is None:
        adapter = create_run(db, name=adapter_name, model_kind="adapter", training_job_id=job.id,
                             **common)
    return [base, adapter]


def endpoint_params(settings: dict[str, Any]) -> dict[str, Any]:
    """The chat parameters of an endpoint run from its ``generation`` settings."""
    params: dict[str, Any] = {"temperature": float(settings.get("temperature") or 0.0),
                              "max_tokens": int(settings.get("max_tokens") or 256)}
    if settings.get("top_p") is not None:
        params["top_p"] = settings["top_p"]
    if settings.get("seed") is not None:
        params["seed"] = settings["seed"]
    if settings.get("extra_body"):
        params["extra_body"] = dict(settings["extra_body"])
    return params


# -- comparison ----------------------------------------------------------------------------------

def parse_run_ids(raw: str | None) -> list[int]:
    try:
        ids = [int(part) for part in (raw or "").replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise _invalid("query.runs", "runs must be a comma-separated list of run ids") from exc
    if len(ids) < 2:
        raise _invalid("query.runs", "compare needs at least two runs, e.g. runs=1,2")
    if len(ids) > MAX_COMPARE_RUNS:
        raise _invalid("query.runs", f"compare at most {MAX_COMPARE_RUNS} runs")
    if len(set(ids)) != len(ids):
        raise _invalid("query.runs", "a run is named twice")
    return ids


def ordered_metrics(runs: list[EvalRun], present: set[str]) -> list[str]:
    ordered: list[str] = []
    for run in runs:
        for name in run.metrics or []:
            try:
                metric = metrics_mod.get_metric(name)
            except metrics_mod.MetricError:
                continue
            outputs = metric.outputs if name == metric.name else (name,)
            ordered.extend(o for o in outputs if o in present and o not in ordered)
    ordered.extend(sorted(present - set(ordered)))
    return ordered


def _direction(name: str) -> bool | None:
    try:
        return metrics_mod.get_metric(name).higher_is_better
    except metrics_mod.MetricError:
        return True


def compare(db: Session, *, project_id: int, run_ids: list[int], baseline_id: int | None = None,
            sort_metric: str | None = None, seed: int = 0, n_resamples: int = 2000,
            confidence: float = 0.95) -> dict[str, Any]:
    """:func:`compare.compare_runs` over runs of the same version and split, plus run details.

    ``per_sample`` rows also carry ``prompt`` (text), ``sample_id`` and ``item_id``; samples are
    keyed by dataset version item id. Failed items (no prediction) are left out pairwise.
    """
    runs = []
    for rid in run_ids:
        run = in_project(db, EvalRun, rid, project_id=project_id)
        if run is None:
            raise _invalid("query.runs", f"evaluation run {rid} not found in this project")
        runs.append(run)
    if len({(r.dataset_version_id, r.split) for r in runs}) != 1:
        raise _invalid("query.runs", "runs must evaluate the same dataset version and split: "
                       + ", ".join(f"#{r.id}: version {r.dataset_version_id}/{r.split}" for r in runs))
    if baseline_id is None:
        baseline_id = runs[0].id
    if baseline_id not in run_ids:
        raise _invalid("query.baseline", "the baseline must be one of the runs")

    inputs = []
    prompts: dict[str, tuple[str, int, int]] = {}
    present: set[str] = set()
    for run in runs:
        scores, predictions, references = {}, {}, {}
        for item_id, sample_id, prompt, prediction, reference, sc, err in db.execute(
                select(EvalPrediction.item_id, EvalPrediction.sample_id, EvalPrediction.prompt,
                       EvalPrediction.prediction, EvalPrediction.reference, EvalPrediction.scores,
                       EvalPrediction.error)
                .where(EvalPrediction.run_id == run.id).order_by(EvalPrediction.item_id)):
            key = str(item_id)
            references[key] = reference
            if key not in prompts:
                prompts[key] = (prompt_text(prompt or []), sample_id, item_id)
            if err is None and prediction is not None:
                scores[key] = dict(sc or {})
                predictions[key] = prediction
                present.update(sc or {})
        inputs.append({"id": run.id, "scores": scores, "predictions": predictions,
                       "references": references})
    names = ordered_metrics(runs, present)
    if sort_metric is not None and sort_metric not in names:
        raise _invalid("query.sort_metric", f"no run scored {sort_metric!r}")
    if sort_metric is None:
        sort_metric = next((m for m in _SORT_PREFERENCE if m in names), names[0] if names else None)
    result = compare_mod.compare_runs(
        inputs, baseline=run_ids.index(baseline_id), metrics=names, sort_metric=sort_metric,
        higher_is_better={m: _direction(m) for m in names}, n_resamples=n_resamples, seed=seed,
        confidence=confidence)
    for row in result["per_sample"]:
        text, sample_id, item_id = prompts.get(row["sample"], ("", None, None))
        row.update(prompt=text, sample_id=sample_id, item_id=item_id)
    info = {r.id: r for r in runs}
    for summary in result["runs"]:
        run = info[summary["id"]]
        summary.update(name=run.name, model_kind=run.model_kind, model=model_label(run),
                       status=run.status, total=run.total, done=run.done, failed=run.failed)
    result["dataset_version_id"] = runs[0].dataset_version_id
    result["split"] = runs[0].split
    result["higher_is_better"] = {m: _direction(m) for m in names}
    result["compare_url"] = compare_url(project_id, run_ids)
    return result


def run_summary(db: Session, run: EvalRun) -> dict[str, Any]:
    """Token and latency totals of a run's predictions (for the run page)."""
    row = db.execute(select(func.count(), func.coalesce(func.sum(EvalPrediction.prompt_tokens), 0),
                            func.coalesce(func.sum(EvalPrediction.completion_tokens), 0),
                            func.avg(EvalPrediction.latency_ms))
                     .where(EvalPrediction.run_id == run.id)).one()
    return {"predictions": row[0], "prompt_tokens": int(row[1]), "completion_tokens": int(row[2]),
            "mean_latency_ms": float(row[3]) if row[3] is not None else None}


def iter_predictions(run_id: int, chunk: int = 500):
    """All predictions of a run in id order, read in keyset chunks in a session of its own."""
    after = 0
    while True:
        with get_sessionmaker()() as db:
            rows = list(db.scalars(select(EvalPrediction).where(
                EvalPrediction.run_id == run_id, EvalPrediction.id > after)
                .order_by(EvalPrediction.id).limit(chunk)))
            db.expunge_all()
        if not rows:
            return
        yield from rows
        after = rows[-1].id

