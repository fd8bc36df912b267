"""The evaluation runner: holds an ``EvalRun`` under the job kit's lease (``workers/jobs.py``).

Every item of the run's split becomes exactly one ``EvalPrediction`` row: the row is inserted
with ``ON CONFLICT (run_id, item_id) DO NOTHING`` together with the run's counter update, in one
transaction fenced by the lease, so a resumed run never writes an item twice, a counter never
counts a row that does not exist, and a runner that lost the run writes nothing. A resumed run
generates only the items that have no row yet.

Cancelling a running run sets ``cancel_requested``; the runner reads it between items and
batches, stops, and closes the run as ``cancelled`` with the aggregate of the predictions it has.
Local models (``base``, ``adapter``) run on ``evaluation.run_local`` (gpu queue), endpoints on
``evaluation.endpoint_run`` (generate queue). torch is imported only for local models.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.db import get_sessionmaker, utcnow
from service.evaluation import metrics as metrics_mod
from service.evaluation import service as evaluation_service
from service.evaluation.jobs import EVAL_ENDPOINT, EVAL_LOCAL
from service.generation import llm
from service.generation import service as generation_service
from service.generation.ratelimit import provider_limiter
from service.models import DatasetVersionItem, EvalPrediction, EvalRun, LLMProvider, TrainingJob
from workers import jobs as kit

log = logging.getLogger(__name__)

Item = tuple[int, int, list[dict[str, Any]], str]


def run_local(run_id: int) -> dict[str, Any]:
    """Evaluate a base model or base+adapter in this (gpu) worker, batch by batch."""
    return kit.drive(EVAL_LOCAL, run_id, lambda lease: _run(lease, _local_body))


def run_endpoint(run_id: int) -> dict[str, Any]:
    """Evaluate an OpenAI-compatible endpoint, ``max_concurrency`` requests at a time."""
    return kit.drive(EVAL_ENDPOINT, run_id, lambda lease: _run(lease, _endpoint_body))


def _run(lease: kit.Lease, body: Callable[[EvalRun, kit.Lease], None]) -> dict[str, Any]:
    with get_sessionmaker()() as db:
        run = db.get(EvalRun, lease.row_id)
        db.expunge(run)
    try:
        body(run, lease)
    except kit.Cancelled:
        pass
    if lease.lost:
        return {"status": "lost"}
    return finish(lease, cancelled=lease.should_stop(max_age=0))


def next_items(run_id: int, after_id: int, limit: int) -> list[Item]:
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
        prompt, reference = evaluation_service.split_messages(messages or [])
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


def record(lease: kit.Lease, item: Item, spec: dict[str, dict[str, Any]], *,
           prediction: str | None, error: str | None = None, prompt_tokens: int = 0,
           completion_tokens: int = 0, latency_ms: int = 0) -> bool:
    """Write one item's prediction and scores, and count it, in one fenced transaction
    (idempotent). False when the row existed or the lease is lost."""
    item_id, sample_id, prompt, reference = item
    scores: dict[str, float] = {}
    if prediction is not None and error is None:
        try:
            scores = evaluation_service.score(prediction, reference, spec)
        except Exception as exc:  # noqa: BLE001 - a metric bug fails the item, not the run
            error = f"scoring failed: {type(exc).__name__}: {exc}"
    with get_sessionmaker()() as db:
        inserted = _insert_ignore(db, {
            "run_id": lease.row_id, "item_id": item_id, "sample_id": sample_id,
            "prompt": prompt, "prediction": prediction, "reference": reference, "scores": scores,
            "error": error[:4000] if error else None, "prompt_tokens": int(prompt_tokens or 0),
            "completion_tokens": int(completion_tokens or 0), "latency_ms": int(latency_ms or 0),
            "created_at": utcnow()})
        if not inserted:
            return False
        counter = EvalRun.failed if error else EvalRun.done
        try:
            # an item in flight when a cancel arrives is kept: cancel keeps what was scored
            lease.guard(db, allow_cancelled=True, **{counter.key: counter + 1})
        except kit.LeaseLost:
            db.rollback()
            return False
        db.commit()
    return True


def finish(lease: kit.Lease, *, cancelled: bool = False) -> dict[str, Any]:
    """Aggregate and close the run once every item has a row (counters recounted exactly).

    ``cancelled``: the runner stopped early on request; the run closes as ``cancelled``, scored
    over the items it has. A cancel that arrives after the last item changes nothing: the run is
    complete and succeeds.
    """
    run_id = lease.row_id
    with get_sessionmaker()() as db:
        total = db.scalar(select(EvalRun.total).where(EvalRun.id == run_id)) or 0
        rows = db.execute(select(EvalPrediction.scores, EvalPrediction.error)
                          .where(EvalPrediction.run_id == run_id)).all()
        first_error = db.scalar(select(EvalPrediction.error).where(
            EvalPrediction.run_id == run_id, EvalPrediction.error.is_not(None))
            .order_by(EvalPrediction.id).limit(1))
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
    lease.finish(status, error=error[:4000] if error else None, done=done, failed=failed,
                 aggregate=aggregate)
    return {"status": status, "done": done, "failed": failed}


def _local_body(run: EvalRun, lease: kit.Lease) -> None:
    from workers.evaluation import local  # lazy: torch

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
    spec = evaluation_service.metric_spec(run.metrics, run.metric_options or {})
    model = local.load(base, adapter_dir, cache_dir=get_settings().local_model_cache)
    batch = int(settings.get("batch_size") or 8)
    after = 0
    while True:
        lease.check()  # between batches: cancelled or lost
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
            record(lease, item, spec, prediction=out.text, error=out.error,
                   prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                   latency_ms=out.latency_ms)


def _endpoint_body(run: EvalRun, lease: kit.Lease) -> None:
    with get_sessionmaker()() as db:
        provider = db.get(LLMProvider, run.provider_id) if run.provider_id else None
        if provider is None:
            raise RuntimeError("the provider of this run was deleted")
        db.expunge(provider)
    settings = generation_service.provider_settings(provider)
    limiter = provider_limiter(provider)
    params = evaluation_service.endpoint_params(run.generation or {})
    spec = evaluation_service.metric_spec(run.metrics, run.metric_options or {})
    concurrency = max(1, provider.max_concurrency)

    def one(item: Item) -> None:
        if lease.should_stop(max_age=0.5):  # lost, or cancelled: leave the item for a resume
            return
        try:
            result = llm.chat(settings, item[2], params=params, limiter=limiter)
        except llm.LLMError as exc:
            record(lease, item, spec, prediction=None, error=exc.message)
            return
        record(lease, item, spec, prediction=result.content,
               prompt_tokens=result.prompt_tokens or 0,
               completion_tokens=result.completion_tokens or 0,
               latency_ms=int(result.latency_s * 1000))

    after = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"eval{run.id}") as pool:
        while True:
            lease.check()
            items = next_items(run.id, after, max(32, concurrency * 4))
            if not items:
                return
            after = items[-1][0]
            list(pool.map(one, items))
