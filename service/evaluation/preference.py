"""Preference evaluations, the API side (no torch): validate and queue, report.

Two kinds of run on one split (``test`` by default) of a frozen preference version:

* ``reward_accuracy`` scores the version's pairs under a ``policy`` and a ``reference`` model:
  the implicit DPO reward of an answer is ``beta * (log p_policy(y|x) - log p_reference(y|x))``,
  a pair is accurate where the chosen answer's reward is the higher one (TRL's
  ``rewards/accuracies``, here on held-out pairs). The reference defaults to the policy's start
  model (its base, or base + the SFT adapter it started from).
* ``win_rate``: a ``candidate`` and a ``baseline`` model each answer the split's prompts; a judge
  provider compares the two answers in both orders (``service.preferences.judge``). Each item
  scores 1 (the candidate won both orders), 0.5 (tie, or the orders disagree) or 0; the win rate
  is their mean, with a seeded bootstrap confidence interval.

A model is ``{"kind": "base", "base_model"}``, ``{"kind": "training_job", "training_job_id"}``
(its adapter on its start model) or ``{"kind": "provider", "provider_id"}`` (an endpoint;
win rate only). The runner is ``workers/evaluation/preference.py``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.db import utcnow
from service.core.errors import Conflict, Invalid, NotFound
from service.core.lookup import get_in_project, in_project
from service.evaluation import compare as compare_mod
from service.models import (
    PreferenceEvalItem,
    PreferenceEvalRun,
    PreferenceVersion,
    PreferenceVersionItem,
    TrainingJob,
)
from service.models.preference import Outcome
from service.preferences.jobs import EVALUATE

log = logging.getLogger(__name__)

KINDS = ("reward_accuracy", "win_rate")
ROLES = {"reward_accuracy": ("policy", "reference"), "win_rate": ("candidate", "baseline")}
SPLITS = ("train", "validation", "test")
PREFERENCE_METHODS = ("dpo", "orpo", "kto")


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, details=[{"field": field, "message": message}])


# -- models ------------------------------------------------------------------------------------

def resolve_model(db: Session, *, project_id: int, spec: Mapping[str, Any], field: str,
                  local_only: bool) -> dict[str, Any]:
    """A checked model spec with a ``label``; a local provider becomes the local model it
    stands for (``provider_id`` kept)."""
    from service.generation import service as generation_service
    from service.training import service as training_service  # no torch: plain functions

    kind = spec.get("kind")
    if kind == "base":
        name = str(spec.get("base_model") or "").strip()
        problem = training_service.check_base_model(name) if name else "base_model is required"
        if problem:
            raise _invalid(f"{field}.base_model", problem)
        return {"kind": "base", "base_model": name, "label": name}
    if kind == "training_job":
        job = in_project(db, TrainingJob, spec.get("training_job_id") or 0, project_id=project_id)
        if job is None:
            raise _invalid(f"{field}.training_job_id", "training job not found in this project")
        if job.status != "succeeded" or not (job.artifacts or {}).get("adapter_dir"):
            raise _invalid(f"{field}.training_job_id",
                           f"training job is {job.status}; only a succeeded job has an adapter")
        return {"kind": "training_job", "training_job_id": job.id,
                "label": f"{job.method} job #{job.id} ({job.base_model})"}
    if kind == "provider":
        try:
            provider = generation_service.get_provider(db, project_id=project_id,
                                                       provider_id=spec.get("provider_id") or 0)
        except NotFound as exc:
            raise _invalid(f"{field}.provider_id", "provider not found in this project") from exc
        if provider.kind == "local":
            local = ({"kind": "training_job", "training_job_id": provider.training_job_id}
                     if provider.training_job_id else {"kind": "base", "base_model": provider.model})
            return {**resolve_model(db, project_id=project_id, spec=local, field=field,
                                    local_only=local_only), "provider_id": provider.id}
        if local_only:
            raise _invalid(f"{field}.kind", "reward accuracy needs the model's log-probabilities: "
                                            "a base model or a training job, not an endpoint")
        return {"kind": "provider", "provider_id": provider.id,
                "label": f"{provider.model} @ provider #{provider.id}"}
    raise _invalid(f"{field}.kind", "kind must be one of base, training_job, provider")


def start_model(db: Session, job: TrainingJob) -> dict[str, Any]:
    """The model a preference job started from: its SFT job's model, else its base."""
    sft_id = (job.hyperparameters or {}).get("sft_job_id")
    if sft_id:
        return {"kind": "training_job", "training_job_id": int(sft_id),
                "label": f"SFT job #{sft_id} ({job.base_model})"}
    return {"kind": "base", "base_model": job.base_model, "label": job.base_model}


def is_local(spec: Mapping[str, Any]) -> bool:
    return spec.get("kind") in ("base", "training_job")


# -- runs --------------------------------------------------------------------------------------

def create_run(db: Session, *, project_id: int, preference_version_id: int, kind: str,
               models: Mapping[str, Any], split: str = "test", name: str = "",
               judge_provider_id: int | None = None, settings: Mapping[str, Any] | None = None,
               actor_id: int | None = None) -> PreferenceEvalRun:
    version = in_project(db, PreferenceVersion, preference_version_id, project_id=project_id)
    if version is None:
        raise _invalid("body.preference_version_id", "preference version not found in this project")
    if version.status != "ready":
        raise _invalid("body.preference_version_id", f"preference version is {version.status}")
    if kind not in KINDS:
        raise _invalid("body.kind", f"kind must be one of {', '.join(KINDS)}")
    if split not in SPLITS:
        raise _invalid("body.split", f"split must be one of {', '.join(SPLITS)}")
    stmt = select(func.count()).select_from(PreferenceVersionItem).where(
        PreferenceVersionItem.version_id == version.id, PreferenceVersionItem.split == split)
    if kind == "reward_accuracy":
        stmt = stmt.where(PreferenceVersionItem.outcome == Outcome.preferred.value)
    total = db.scalar(stmt) or 0
    if not total:
        raise _invalid("body.split", f"the {split} split of this version has no "
                                     + ("pairs" if kind == "reward_accuracy" else "items"))
    first, second = ROLES[kind]
    resolved: dict[str, Any] = {}
    if not isinstance(models.get(first), Mapping):
        raise _invalid(f"body.models.{first}", f"{kind} needs a {first} model")
    resolved[first] = resolve_model(db, project_id=project_id, spec=models[first],
                                    field=f"body.models.{first}",
                                    local_only=kind == "reward_accuracy")
    training_job_id = resolved[first].get("training_job_id")
    other = models.get(second)
    if other is None and kind == "reward_accuracy" and training_job_id:
        resolved[second] = start_model(db, db.get_one(TrainingJob, training_job_id))
    elif not isinstance(other, Mapping):
        raise _invalid(f"body.models.{second}", f"{kind} needs a {second} model")
    else:
        resolved[second] = resolve_model(db, project_id=project_id, spec=other,
                                         field=f"body.models.{second}",
                                         local_only=kind == "reward_accuracy")
    opts = dict(settings or {})
    if kind == "reward_accuracy":
        job = db.get(TrainingJob, training_job_id) if training_job_id else None
        opts.setdefault("beta", float((job.hyperparameters or {}).get("beta", 0.1)) if job else 0.1)
        judge_provider_id = None
    else:
        from service.preferences import service as preferences_service

        preferences_service.judge_provider(db, project_id=project_id, provider_id=judge_provider_id)
    local = any(is_local(m) for m in resolved.values())
    run = PreferenceEvalRun(project_id=project_id, preference_version_id=version.id, split=split,
                            name=(name or "").strip()[:200], kind=kind, models=resolved,
                            training_job_id=training_job_id, judge_provider_id=judge_provider_id,
                            settings=opts, total=total, done=0, failed=0, aggregate={},
                            status="queued", created_by_id=actor_id,
                            queue=None if local else "generate")
    db.add(run)
    db.flush()
    if not run.name:
        run.name = f"{kind}-{run.id}"
        db.flush()
    jobs.enqueue(db, EVALUATE, run)
    return run


def after_training_name(training_job_id: int) -> str:
    return f"train-{training_job_id}-reward-accuracy"


def request_after_training(db: Session, *, training_job_id: int) -> PreferenceEvalRun | None:
    """A succeeded preference job's ``evaluate_after``: reward accuracy of its model against its
    start model on its version's test split. Idempotent; never raises (the job has succeeded
    whatever happens here)."""
    try:
        with db.begin_nested():
            job = db.get(TrainingJob, training_job_id)
            if job is None or job.status != "succeeded" or not job.preference_version_id:
                return None
            name = after_training_name(job.id)
            found = db.scalar(select(PreferenceEvalRun).where(
                PreferenceEvalRun.training_job_id == job.id, PreferenceEvalRun.name == name))
            if found is not None:
                return found
            version = db.get(PreferenceVersion, job.preference_version_id)
            if version is None or not (version.counts or {}).get("test"):
                log.warning("training job %s: preference version %s has no test split; nothing "
                            "to evaluate", job.id, job.preference_version_id)
                return None
            return create_run(db, project_id=job.project_id, preference_version_id=version.id,
                              kind="reward_accuracy", name=name, actor_id=job.created_by_id,
                              models={"policy": {"kind": "training_job", "training_job_id": job.id}})
    except Exception:
        log.exception("could not request the evaluation after training job %s", training_job_id)
        return None


def get_run(db: Session, *, project_id: int, run_id: int) -> PreferenceEvalRun:
    return get_in_project(db, PreferenceEvalRun, run_id, project_id=project_id, what="preference evaluation",
                          code="run_not_found")


def runs_query(*, project_id: int, training_job_id: int | None = None) -> Select[Any]:
    stmt = select(PreferenceEvalRun).where(PreferenceEvalRun.project_id == project_id)
    if training_job_id is not None:
        stmt = stmt.where(PreferenceEvalRun.training_job_id == training_job_id)
    return stmt


def cancel_run(db: Session, run: PreferenceEvalRun) -> PreferenceEvalRun:
    """Queued: cancelled at once; running: asked to stop (between batches)."""
    m = PreferenceEvalRun

    def set_where(current: str, **values: Any) -> int:
        return int(db.execute(update(m).where(m.id == run.id, m.status == current).values(**values)
                              .execution_options(synchronize_session=False)).rowcount)  # type: ignore[attr-defined]

    queued = set_where("queued", status="cancelled", cancel_requested=True, finished_at=utcnow())
    asked = 0 if queued else set_where("running", cancel_requested=True)
    if not queued and not asked:
        db.refresh(run)
        raise Conflict(f"the evaluation is already {run.status}", code="run_finished")
    db.flush()
    db.refresh(run)
    return run


def items_page(db: Session, run_id: int, *, limit: int, cursor: str | None
               ) -> tuple[list[dict[str, Any]], str | None]:
    """The run's items with their frozen prompt and pair, in item order."""
    from service.core.pagination import paginate

    rows, nxt = paginate(db, select(PreferenceEvalItem).where(PreferenceEvalItem.run_id == run_id),
                         PreferenceEvalItem.id, limit=limit, cursor=cursor)
    frozen = {v.id: v for v in db.scalars(select(PreferenceVersionItem).where(
        PreferenceVersionItem.id.in_([r.item_id for r in rows])))} if rows else {}
    return [{"id": e.id, "item_id": frozen[e.item_id].item_id, "prompt": frozen[e.item_id].prompt,
             "chosen": frozen[e.item_id].chosen, "rejected": frozen[e.item_id].rejected,
             "outputs": e.outputs, "scores": e.scores, "error": e.error} for e in rows], nxt


# -- aggregates (pure) -------------------------------------------------------------------------

def _interval(values: list[float], *, seed: int = 0, n_resamples: int = 2000,
              confidence: float = 0.95) -> dict[str, float]:
    boot = compare_mod.paired_bootstrap([0.0] * len(values), values, n_resamples=n_resamples,
                                        seed=seed, confidence=confidence)
    return {"ci_low": boot["ci_low"], "ci_high": boot["ci_high"], "confidence": confidence}


def aggregate_rewards(scores: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(scores)
    if not rows:
        return {"n": 0}
    correct = [float(s["correct"]) for s in rows]
    margins = [float(s["margin"]) for s in rows]
    out: dict[str, Any] = {
        "n": len(rows), "reward_accuracy": float(np.mean(correct)),
        **{f"reward_accuracy_{k}": v for k, v in _interval(correct).items() if k != "confidence"},
        "reward_margin": float(np.mean(margins)),
        "chosen_reward": float(np.mean([s["chosen_reward"] for s in rows])),
        "rejected_reward": float(np.mean([s["rejected_reward"] for s in rows])),
        "policy_logp_accuracy": float(np.mean([s["chosen_logp"] > s["rejected_logp"]
                                               for s in rows])),
        "reference_logp_accuracy": float(np.mean([s["ref_chosen_logp"] > s["ref_rejected_logp"]
                                                  for s in rows])),
        "confidence": 0.95}
    return out


def aggregate_wins(scores: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(scores)
    if not rows:
        return {"n": 0}
    values = [float(s["score"]) for s in rows]
    return {"n": len(rows), "win_rate": float(np.mean(values)),
            **{f"win_rate_{k}": v for k, v in _interval(values).items() if k != "confidence"},
            "wins": sum(v > 0.5 for v in values), "ties": sum(v == 0.5 for v in values),
            "losses": sum(v < 0.5 for v in values),
            "position_consistency": float(np.mean([bool(s["consistent"]) for s in rows])),
            "confidence": 0.95}


def aggregate(kind: str, scores: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return aggregate_rewards(scores) if kind == "reward_accuracy" else aggregate_wins(scores)


def headline(run: PreferenceEvalRun) -> dict[str, Any] | None:
    """The run's main number with its interval, for the pages: ``{label, value, low, high}``."""
    key = run.kind
    agg = run.aggregate or {}
    if agg.get(key) is None:
        return None
    return {"label": key.replace("_", " "), "value": agg[key], "low": agg.get(f"{key}_ci_low"),
            "high": agg.get(f"{key}_ci_high"), "n": agg.get("n")}
