"""Evaluation runs: validate and queue (API side), generate and score (worker side), compare.

A run evaluates one model on one split of a frozen dataset version. Every item of the split
becomes exactly one ``EvalPrediction`` row: the row is inserted with ``ON CONFLICT (run_id,
item_id) DO NOTHING`` together with the run's counter update, in one transaction, so a retried or
resumed run can never write an item twice, and a counter never counts a row that does not exist.

One worker owns a running run at a time. It claims the run (``queued`` -> ``running``) and from
then on ``heartbeat_at`` is its fencing token: every heartbeat is ``UPDATE ... WHERE
heartbeat_at = <the value I wrote last>``, so a worker that lost the run (the sweeper handed it to
another one after its heartbeats stopped) notices at its next heartbeat and stops. The sweeper
puts runs whose heartbeat is older than ``job_stale_seconds`` back to ``queued`` and sends them
again; the new owner generates only the items that have no row yet. Every claim counts an
attempt, and a run claimed more than ``MAX_ATTEMPTS`` times fails rather than loop forever.

Cancelling a running run sets ``cancel_requested``; its runner reads the flag between items,
stops, and closes the run as ``cancelled`` with the aggregate of the predictions it has.

Local models (``base``, ``adapter``) run on ``evaluation.run_local`` (gpu queue), endpoints on
``evaluation.endpoint_run`` (generate queue). torch is imported only inside ``run_local``.
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.config import get_settings
from service.core.db import get_sessionmaker, utcnow
from service.core.errors import Conflict, Invalid, NotFound
from service.evaluation import compare as compare_mod
from service.evaluation import metrics as metrics_mod
from service.models import (
    DatasetVersion,
    DatasetVersionItem,
    EvalPrediction,
    EvalRun,
    LLMProvider,
    TrainingJob,
)

log = logging.getLogger(__name__)

LOCAL_TASK = "evaluation.run_local"
ENDPOINT_TASK = "evaluation.endpoint_run"
DEFAULT_METRICS = ("exact_match", "bleu-4", "rouge", "char_f1")
MODEL_KINDS = ("base", "adapter", "endpoint")
SPLITS = ("train", "validation", "test")
MAX_COMPARE_RUNS = 8
# claims of one run (first run, resumes after a dead worker, re-sent messages) before giving up
MAX_ATTEMPTS = 3
# how often a runner reads ``cancel_requested`` between items
CANCEL_CHECK_SECONDS = 0.5
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

def task_for(run: EvalRun) -> str:
    return ENDPOINT_TASK if run.model_kind == "endpoint" else LOCAL_TASK


def model_label(run: EvalRun) -> str:
    if run.model_kind == "adapter":
        return f"{run.base_model} + adapter (training job #{run.training_job_id})"
    if run.model_kind == "endpoint":
        return f"{run.base_model} @ provider #{run.provider_id}"
    return str(run.base_model)


def create_run(db: Session, *, project_id: int, dataset_version_id: int, model_kind: str,
               split: str = "test", name: str = "", base_model: str | None = None,
               training_job_id: int | None = None, provider_id: int | None = None,
               generation: dict[str, Any] | None = None, metrics: list[str] | None = None,
               metric_options: dict[str, Any] | None = None, actor_id: int | None = None,
               enqueue: bool = True) -> EvalRun:
    from service.training import service as training_service  # no torch: plain functions

    version = db.get(DatasetVersion, dataset_version_id)
    if version is None or version.project_id != project_id:
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
        problem = training_service.check_base_model(base_model)
        if problem:
            raise _invalid("body.base_model", problem)
        if training_job_id is not None:  # a baseline run kept with the job it is the base of
            job = db.get(TrainingJob, training_job_id)
            if job is None or job.project_id != project_id:
                raise _invalid("body.training_job_id", "training job not found in this project")
        provider_id = None
    elif model_kind == "adapter":
        if training_job_id is None:
            raise _invalid("body.training_job_id", "training_job_id is required for model_kind=adapter")
        job = db.get(TrainingJob, training_job_id)
        if job is None or job.project_id != project_id:
            raise _invalid("body.training_job_id", "training job not found in this project")
        if job.status != "succeeded" or not (job.artifacts or {}).get("adapter_dir"):
            raise _invalid("body.training_job_id",
                           f"training job is {job.status}; only a succeeded job has an adapter")
        base_model, provider_id = job.base_model, None
    elif model_kind == "endpoint":
        from service.generation import service as generation_service

        if provider_id is None:
            raise _invalid("body.provider_id", "provider_id is required for model_kind=endpoint")
        try:
            provider = generation_service.get_provider(db, project_id=project_id, provider_id=provider_id)
        except NotFound as exc:
            raise _invalid("body.provider_id", "provider not found in this project") from exc
        if provider.kind != "openai":
            raise _invalid("body.provider_id", "a local provider runs in the worker: evaluate it "
                                               "with model_kind=base and its model path")
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
        jobs.enqueue(db, task_for(run), run_id=run.id, mark=(EvalRun, run.id))
    return run


def get_run(db: Session, *, project_id: int, run_id: int) -> EvalRun:
    run = db.get(EvalRun, run_id)
    if run is None or run.project_id != project_id:
        raise NotFound("evaluation run not found", code="run_not_found")
    return run


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


# -- the worker side -----------------------------------------------------------------------------

class Lease:
    """Ownership of a running run; ``heartbeat_at`` is the fencing token (see module docstring)."""

    def __init__(self, run_id: int, token: datetime):
        self.run_id = run_id
        self.token = token
        self.lost = False
        self._lock = threading.Lock()
        self._cancel = False
        self._cancel_checked = float("-inf")

    def guarded(self, **values: Any) -> bool:
        """Update the run (and the heartbeat) only while this worker still owns it."""
        with self._lock:
            if self.lost:
                return False
            now = utcnow()
            with get_sessionmaker()() as db:
                owned = db.execute(update(EvalRun).where(
                    EvalRun.id == self.run_id, EvalRun.status == "running",
                    EvalRun.heartbeat_at == self.token).values(heartbeat_at=now, **values)).rowcount
                db.commit()
            if owned:
                self.token = now
            else:
                self.lost = True
                log.warning("evaluation run %s: lost the run to another worker", self.run_id)
            return bool(owned)

    def renew(self) -> bool:
        return self.guarded()

    def cancel_requested(self, *, now: bool = False) -> bool:
        """Whether a user asked to cancel the run; read at most every ``CANCEL_CHECK_SECONDS``
        (``now``: read it now), so checking between every item costs little."""
        clock = time.monotonic()
        if not self._cancel and (now or clock - self._cancel_checked >= CANCEL_CHECK_SECONDS):
            self._cancel_checked = clock
            with get_sessionmaker()() as db:
                self._cancel = bool(db.scalar(select(EvalRun.cancel_requested)
                                              .where(EvalRun.id == self.run_id)))
        return self._cancel

    def should_stop(self) -> bool:
        """Stop before the next item: the run was lost to another worker, or cancelled."""
        return self.lost or self.cancel_requested()

    def proceed(self) -> bool:
        """Renew the lease before the next batch; False when the runner must stop."""
        return self.renew() and not self.cancel_requested()


def claim(run_id: int) -> tuple[EvalRun, Lease] | None:
    """Take a queued run (or a running one whose worker stopped heart-beating).

    Every claim counts an attempt; past ``MAX_ATTEMPTS`` (workers keep dying on it, or its
    messages keep being re-sent while it stalls) the run fails instead of looping forever.
    Finished runs (succeeded, failed, cancelled) are never claimed.
    """
    stale = utcnow() - timedelta(seconds=get_settings().job_stale_seconds)
    now = utcnow()
    with get_sessionmaker()() as db:
        claimed = db.execute(update(EvalRun).where(
            EvalRun.id == run_id,
            or_(EvalRun.status == "queued",
                (EvalRun.status == "running") & (or_(EvalRun.heartbeat_at < stale,
                                                     EvalRun.heartbeat_at.is_(None)))))
            .values(status="running", heartbeat_at=now, error=None,
                    attempts=EvalRun.attempts + 1)).rowcount
        db.commit()
        if not claimed:
            return None
        run = db.get(EvalRun, run_id)
        if run.attempts > MAX_ATTEMPTS and not run.cancel_requested:
            db.execute(update(EvalRun).where(
                EvalRun.id == run_id, EvalRun.status == "running", EvalRun.heartbeat_at == now)
                .values(status="failed", finished_at=utcnow(),
                        error=f"gave up after {MAX_ATTEMPTS} attempts (workers died or stalled "
                              f"on this run); {run.done + run.failed} of {run.total} items "
                              "have a prediction"))
            db.commit()
            log.warning("evaluation run %s: gave up after %s attempts", run_id, MAX_ATTEMPTS)
            return None
        if run.attempts > 1:
            log.warning("evaluation run %s: attempt %s, resuming", run_id, run.attempts)
        db.expunge(run)
    return run, Lease(run_id, now)


def _heartbeat(lease: Lease, stop: threading.Event) -> threading.Thread:
    interval = max(1.0, get_settings().job_stale_seconds / 3)

    def loop() -> None:
        while not stop.wait(interval):
            try:
                if not lease.renew():
                    return
            except Exception:  # a database hiccup: try again at the next beat
                log.exception("evaluation run %s: heartbeat failed", lease.run_id)

    thread = threading.Thread(target=loop, daemon=True, name=f"eval-heartbeat-{lease.run_id}")
    thread.start()
    return thread


def next_items(run_id: int, after_id: int, limit: int) -> list[tuple[int, int, list[dict], str]]:
    """Items of the run's split that have no prediction yet: ``(item_id, sample_id, prompt, ref)``."""
    with get_sessionmaker()() as db:
        run = db.get(EvalRun, run_id)
        have = select(EvalPrediction.item_id).where(EvalPrediction.run_id == run_id)
        rows = db.execute(select(DatasetVersionItem.id, DatasetVersionItem.sample_id,
                                 DatasetVersionItem.messages).where(
            DatasetVersionItem.version_id == run.dataset_version_id,
            DatasetVersionItem.split == run.split, DatasetVersionItem.id > after_id,
            DatasetVersionItem.id.not_in(have)).order_by(DatasetVersionItem.id).limit(limit)).all()
    out = []
    for item_id, sample_id, messages in rows:
        prompt, reference = split_messages(messages or [])
        out.append((item_id, sample_id, prompt, reference))
    return out


def _insert_ignore(db: Session, values: dict[str, Any]) -> bool:
    dialect = db.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the two supported backends
        raise RuntimeError(f"unsupported database {dialect}")
    stmt = (insert(EvalPrediction).values(**values)
            .on_conflict_do_nothing(index_elements=["run_id", "item_id"])
            .returning(EvalPrediction.id))
    return db.execute(stmt).first() is not None


def record(run_id: int, item: tuple[int, int, list[dict], str], spec: dict[str, dict[str, Any]], *,
           prediction: str | None, error: str | None = None, prompt_tokens: int = 0,
           completion_tokens: int = 0, latency_ms: int = 0) -> bool:
    """Write one item's prediction and scores, and count it, in one transaction (idempotent)."""
    item_id, sample_id, prompt, reference = item
    scores: dict[str, float] = {}
    if prediction is not None and error is None:
        try:
            scores = score(prediction, reference, spec)
        except Exception as exc:  # noqa: BLE001 - a metric bug fails the item, not the run
            error = f"scoring failed: {type(exc).__name__}: {exc}"
    with get_sessionmaker()() as db:
        inserted = _insert_ignore(db, {
            "run_id": run_id, "item_id": item_id, "sample_id": sample_id, "prompt": prompt,
            "prediction": prediction, "reference": reference, "scores": scores,
            "error": error[:4000] if error else None, "prompt_tokens": int(prompt_tokens or 0),
            "completion_tokens": int(completion_tokens or 0), "latency_ms": int(latency_ms or 0),
            "created_at": utcnow()})
        if inserted:
            counter = EvalRun.failed if error else EvalRun.done
            db.execute(update(EvalRun).where(EvalRun.id == run_id)
                       .values({counter.key: counter + 1}))
        db.commit()
    return inserted


def finish(run_id: int, lease: Lease, *, cancelled: bool = False) -> dict[str, Any]:
    """Aggregate and close the run once every item has a row (counters recounted exactly).

    ``cancelled``: the runner stopped early on request; the run closes as ``cancelled``, scored
    over the items it has. A cancel that arrives after the last item changes nothing: the run is
    complete and succeeds.
    """
    with get_sessionmaker()() as db:
        run = db.get(EvalRun, run_id)
        rows = db.execute(select(EvalPrediction.scores, EvalPrediction.error)
                          .where(EvalPrediction.run_id == run_id)).all()
        first_error = db.scalar(select(EvalPrediction.error).where(
            EvalPrediction.run_id == run_id, EvalPrediction.error.is_not(None))
            .order_by(EvalPrediction.id).limit(1))
        total = run.total
    done = sum(1 for _, err in rows if err is None)
    failed = len(rows) - done
    complete = done + failed >= total
    if not complete and not cancelled:
        return {"status": "incomplete", "done": done, "failed": failed}
    aggregate = metrics_mod.aggregate(s for s, err in rows if err is None)
    if not complete:
        status = "cancelled"
        error = f"{failed} item(s) failed; first error: {first_error}" if failed else None
    elif done == 0 and failed:
        status, error = "failed", f"all {failed} item(s) failed; first error: {first_error}"
    else:
        status = "succeeded"
        error = f"{failed} item(s) failed; first error: {first_error}" if failed else None
    lease.guarded(status=status, error=error[:4000] if error else None, done=done, failed=failed,
                  aggregate=aggregate, finished_at=utcnow())
    return {"status": status, "done": done, "failed": failed}


def _fail(run_id: int, lease: Lease, message: str) -> None:
    lease.guarded(status="failed", error=message[:4000], finished_at=utcnow())


def _drive(run_id: int, body: Callable[[EvalRun, Lease], None]) -> dict[str, Any]:
    claimed = claim(run_id)
    if claimed is None:
        return {"status": "skipped"}
    run, lease = claimed
    stop = threading.Event()
    _heartbeat(lease, stop)
    try:
        body(run, lease)
        if lease.lost:
            return {"status": "lost"}
        return finish(run_id, lease, cancelled=lease.cancel_requested(now=True))
    except Exception as exc:
        log.exception("evaluation run %s failed", run_id)
        _fail(run_id, lease, f"{type(exc).__name__}: {exc}")
        return {"status": "failed"}
    finally:
        stop.set()


def run_local(run_id: int) -> dict[str, Any]:
    """Evaluate a base model or base+adapter in this (gpu) worker, batch by batch."""
    return _drive(run_id, _local_body)


def _local_body(run: EvalRun, lease: Lease) -> None:
    from workers.evaluation import local  # lazy: torch lives in the workers only

    adapter_dir = None
    base = run.base_model
    if run.model_kind == "adapter":
        with get_sessionmaker()() as db:
            job = db.get(TrainingJob, run.training_job_id) if run.training_job_id else None
            artifacts = dict(job.artifacts or {}) if job is not None else {}
        if not artifacts.get("adapter_dir"):
            raise RuntimeError("the training job or its adapter is gone")
        adapter_dir = artifacts["adapter_dir"]
        base = artifacts.get("base_model_path") or base
    settings = dict(run.generation or {})
    spec = metric_spec(run.metrics, run.metric_options or {})
    model = local.load(base, adapter_dir, cache_dir=get_settings().local_model_cache)
    batch = int(settings.get("batch_size") or 8)
    after = 0
    while lease.proceed():
        items = next_items(run.id, after, batch)
        if not items:
            return
        after = items[-1][0]
        try:
            outputs = local.generate(model, [it[2] for it in items], settings)
        except Exception as exc:  # noqa: BLE001 - fall back to one prompt at a time
            log.warning("run %s: batch generation failed (%s); one by one", run.id, exc)
            outputs = []
            for it in items:
                try:
                    outputs.extend(local.generate(model, [it[2]], settings))
                except Exception as one:  # noqa: BLE001
                    outputs.append(local.Output(None, 0, 0, 0, f"{type(one).__name__}: {one}"))
        for item, out in zip(items, outputs, strict=True):
            record(run.id, item, spec, prediction=out.text, error=out.error,
                   prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                   latency_ms=out.latency_ms)


def endpoint_params(settings: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"temperature": float(settings.get("temperature") or 0.0),
                              "max_tokens": int(settings.get("max_tokens") or 256)}
    if settings.get("top_p") is not None:
        params["top_p"] = settings["top_p"]
    if settings.get("seed") is not None:
        params["seed"] = settings["seed"]
    if settings.get("extra_body"):
        params["extra_body"] = dict(settings["extra_body"])
    return params


def run_endpoint(run_id: int) -> dict[str, Any]:
    """Evaluate an OpenAI-compatible endpoint, ``max_concurrency`` requests at a time."""
    return _drive(run_id, _endpoint_body)


def _endpoint_body(run: EvalRun, lease: Lease) -> None:
    from service.generation import llm
    from service.generation import service as generation_service

    with get_sessionmaker()() as db:
        provider = db.get(LLMProvider, run.provider_id) if run.provider_id else None
        if provider is None:
            raise RuntimeError("the provider of this run was deleted")
        db.expunge(provider)
    provider_settings = generation_service.provider_settings(provider)
    limiter = generation_service._limiter(provider)
    params = endpoint_params(run.generation or {})
    spec = metric_spec(run.metrics, run.metric_options or {})
    concurrency = max(1, provider.max_concurrency)

    def one(item: tuple[int, int, list[dict], str]) -> None:
        if lease.should_stop():  # lost, or cancelled: leave the item for nobody / a resume
            return
        try:
            result = llm.chat(provider_settings, item[2], params=params, limiter=limiter)
        except llm.LLMError as exc:
            record(run.id, item, spec, prediction=None, error=exc.message)
            return
        record(run.id, item, spec, prediction=result.content,
               prompt_tokens=result.prompt_tokens or 0,
               completion_tokens=result.completion_tokens or 0,
               latency_ms=int(result.latency_s * 1000))

    after = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"eval{run.id}") as pool:
        while lease.proceed():
            items = next_items(run.id, after, max(32, concurrency * 4))
            if not items:
                return
            after = items[-1][0]
            list(pool.map(one, items))


def sweep_stale_runs(queues: set[str] | None = None) -> list[int]:
    """Put runs whose worker stopped heart-beating back to ``queued`` and send them again.

    ``queues``: the queues the calling worker consumes (local runs need ``gpu``, endpoint runs
    ``generate``); ``None`` sweeps both. ``sent_at`` is cleared with the re-queue and set again
    once the broker takes the message, so a re-send lost to a broker outage is re-sent by the
    sweepers' periodic pass (``heartbeat_at = now`` keeps that pass off until this send is
    over, and fences the old owner).
    """
    kinds: list[str] = []
    if queues is None or "gpu" in queues:
        kinds += ["base", "adapter"]
    if queues is None or "generate" in queues:
        kinds.append("endpoint")
    if not kinds:
        return []
    stale = utcnow() - timedelta(seconds=get_settings().job_stale_seconds)
    resumed = []
    with get_sessionmaker()() as db:
        for run in db.scalars(select(EvalRun).where(
                EvalRun.status == "running", EvalRun.model_kind.in_(kinds),
                or_(EvalRun.heartbeat_at < stale, EvalRun.heartbeat_at.is_(None)))):
            requeued = db.execute(update(EvalRun).where(
                EvalRun.id == run.id, EvalRun.status == "running",
                EvalRun.heartbeat_at == run.heartbeat_at)
                .values(status="queued", sent_at=None, heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)).rowcount
            if requeued:
                jobs.enqueue(db, task_for(run), run_id=run.id, mark=(EvalRun, run.id))
                resumed.append(run.id)
        db.commit()
    return resumed


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
        run = db.get(EvalRun, rid)
        if run is None or run.project_id != project_id:
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

