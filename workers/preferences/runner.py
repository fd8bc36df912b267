"""Preference runners, each under the job kit's lease (``workers/jobs.py``).

* ``preferences.build_version``: freezes a preference version in one transaction, sealed with
  the lease (a killed build leaves nothing; the sweeper re-queues it and it starts afresh).
* ``preferences.generate``: drafts the missing candidates of a job's items, item by item.
  Candidate ``i`` comes from ``sources[i]`` (a provider and its sampling parameters), so one
  item's candidates differ by provider, temperature or seed. An item's new candidates and the
  job's counter are written in one transaction fenced by ``lease.guard``; ``(item, position)``
  is unique, so a resumed or redelivered job never writes a candidate twice, and a cancelled
  job writes nothing after the cancel. Cancel is read between items and between calls.
  A job whose one source has ``role: judge`` pre-ranks the items' pairs instead: an LLM judge
  compares the two candidates each item shows, in both orders, into ``item.judge``.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from service.core.db import get_sessionmaker
from service.generation import llm
from service.generation import service as generation_service
from service.generation.ratelimit import provider_limiter
from service.models import LLMProvider, PreferenceCandidate, PreferenceGenerationJob, PreferenceItem
from service.preferences import judge as judge_mod
from service.preferences import service as preferences_service
from service.preferences import versions as preferences_versions
from service.preferences.jobs import BUILD, GENERATE
from workers import jobs as kit

log = logging.getLogger(__name__)


def build_version(version_id: int) -> dict[str, Any]:
    """Task body for ``preferences.build_version``."""
    return kit.drive(BUILD, version_id, _build)


def _build(lease: kit.Lease) -> dict[str, Any]:
    with get_sessionmaker()() as db:
        version = preferences_versions.build_version(db, lease.row_id)
        lease.seal(db)
        counts = dict(version.counts or {})
        db.commit()
    return {"status": "ready", "counts": counts}


def generate(job_id: int) -> dict[str, Any]:
    """Task body for ``preferences.generate``."""
    return kit.drive(GENERATE, job_id, _generate)


def _complete(db: Any, item_ids: list[int], need: int) -> set[int]:
    rows = db.execute(select(PreferenceCandidate.item_id).where(
        PreferenceCandidate.item_id.in_(item_ids)).group_by(PreferenceCandidate.item_id)
        .having(func.count() >= need)).all()
    return {int(r[0]) for r in rows}


def _draft(lease: kit.Lease, provider: LLMProvider, limiter: Any, messages: list[dict[str, str]],
           params: dict[str, Any]) -> llm.LLMResult:
    if lease.should_stop(max_age=0.5):
        raise kit.LeaseLost(f"preference generation job {lease.row_id}")
    if provider.kind == "local":
        from workers.generation import local  # lazy: torch

        try:
            return local.chat_parsed(provider.model, messages, "text", params=params,
                                     should_stop=lambda: lease.should_stop(max_age=0.5)).result
        except local.Stopped as exc:
            raise kit.LeaseLost(f"preference generation job {lease.row_id}") from exc
    return llm.chat(generation_service.provider_settings(provider), messages, params=params,
                    limiter=limiter)


def _generate(lease: kit.Lease) -> dict[str, Any]:
    job_id = lease.row_id
    with get_sessionmaker()() as db:
        job = db.get_one(PreferenceGenerationJob, job_id)
        sources = [dict(s) for s in job.sources]
        if sources and sources[0].get("role") == "judge":
            db.expunge(job)
            return _prerank(lease, job)
        item_ids = [int(i) for i in job.item_ids]
        providers = {s["provider_id"]: db.get(LLMProvider, s["provider_id"]) for s in sources}
        done = _complete(db, item_ids, len(sources))
        lease.guard(db, done_items=len(done))
        db.commit()
        db.expunge_all()
    if any(p is None for p in providers.values()):
        raise RuntimeError("a provider of the job was deleted")
    limiters = {pid: provider_limiter(p) for pid, p in providers.items()}
    failed = 0
    last_error: str | None = None
    for item_id in item_ids:
        if item_id in done:
            continue
        lease.check()  # cancelled or lost: stop between items
        with get_sessionmaker()() as db:
            item = db.get(PreferenceItem, item_id)
            have = set(db.scalars(select(PreferenceCandidate.position)
                                  .where(PreferenceCandidate.item_id == item_id)))
            prompt = list(item.prompt) if item is not None else []
        if item is None:
            continue
        drafts: list[PreferenceCandidate] = []
        try:
            for position, src in enumerate(sources):
                if position in have:
                    continue
                provider = providers[src["provider_id"]]
                res = _draft(lease, provider, limiters[provider.id], prompt, src.get("params") or {})
                if not res.content.strip():
                    raise llm.LLMError("the model answered with empty text")
                drafts.append(PreferenceCandidate(
                    item_id=item_id, position=position, content=res.content,
                    provenance={"job_id": job_id, "source": position, "provider_id": provider.id,
                                "model": res.model or provider.model,
                                "params": dict(src.get("params") or {}),
                                "prompt_tokens": res.prompt_tokens,
                                "completion_tokens": res.completion_tokens,
                                "finish_reason": res.finish_reason}))
        except (llm.LLMError, ValueError) as exc:
            failed += 1
            last_error = f"item {item_id}: {exc}"[:2000]
            with get_sessionmaker()() as db:
                lease.guard(db, failed_items=failed, last_error=last_error)
                db.commit()
            continue
        with get_sessionmaker()() as db:
            try:
                db.add_all(drafts)
                db.flush()
                lease.guard(db, done_items=PreferenceGenerationJob.done_items + 1)
                db.commit()
            except IntegrityError:  # another runner wrote them: never a second copy
                db.rollback()
                log.warning("item %s already has its candidates", item_id)
            except kit.LeaseLost:
                db.rollback()
                raise
    lease.check()
    with get_sessionmaker()() as db:
        complete = len(_complete(db, item_ids, len(sources)))
        status = "succeeded" if complete or not item_ids else "failed"
        error = (f"{failed} item(s) failed; last error: {last_error}" if failed else None)
        lease.finish(status, db, done_items=complete, failed_items=failed, last_error=last_error,
                     error=error)
        db.commit()
    return {"status": status, "done": complete, "failed": failed}


def _prerank(lease: kit.Lease, job: PreferenceGenerationJob) -> dict[str, Any]:
    """An LLM judge ranks the pair each item shows (its first two candidates in display order)
    in both orders; the result goes to ``item.judge`` with the job's counter, one fenced
    transaction per item. Items this judge ranked already are counted, not asked again."""
    source = dict(job.sources[0])
    with get_sessionmaker()() as db:
        provider = db.get(LLMProvider, source["provider_id"])
        if provider is None:
            raise RuntimeError("the judge provider was deleted")
        db.expunge(provider)
    chat = judge_mod.provider_chat(provider, source.get("params"))
    failures: list[str] = []

    def count(*writes: Any, **counters: Any) -> None:
        """``writes`` and the job's counters in one fenced transaction (none after a cancel)."""
        with get_sessionmaker()() as db:
            try:
                for stmt in writes:
                    db.execute(stmt.execution_options(synchronize_session=False))
                lease.guard(db, **counters)
                db.commit()
            except kit.LeaseLost:
                db.rollback()

    def one(item_id: int) -> None:
        if lease.should_stop(max_age=0.5):
            return
        with get_sessionmaker()() as db:
            item = db.get(PreferenceItem, item_id)
            if item is None:
                return
            ranked = (item.judge or {}).get("provider_id") == provider.id
            shown = preferences_service.display_order(
                item_id, preferences_service.candidates_of(db, item_id))[:2]
            prompt = list(item.prompt)
            pair = [(c.id, c.content) for c in shown]
        if ranked or len(pair) < 2:
            count(done_items=PreferenceGenerationJob.done_items + 1)
            return
        try:
            j = judge_mod.judge_pair(chat, prompt, pair[0][1], pair[1][1])
        except (llm.LLMError, judge_mod.NoVerdict) as exc:
            failures.append(f"item {item_id}: {getattr(exc, 'message', None) or exc}"[:2000])
            count(failed_items=PreferenceGenerationJob.failed_items + 1, last_error=failures[-1])
            return
        first, second = pair[0][0], pair[1][0]
        winner = first if j.score > 0.5 else second if j.score < 0.5 else None
        verdict = {"provider_id": provider.id, "model": provider.model, "job_id": job.id,
                   "chosen_id": winner,
                   "rejected_id": None if winner is None else (second if winner == first else first),
                   "first_id": first, "score": j.score, "consistent": j.consistent,
                   "verdicts": j.verdicts, "reasons": [r[:500] for r in j.replies]}
        count(update(PreferenceItem).where(PreferenceItem.id == item_id).values(judge=verdict),
              done_items=PreferenceGenerationJob.done_items + 1)

    with ThreadPoolExecutor(max_workers=max(1, provider.max_concurrency),
                            thread_name_prefix=f"prerank{job.id}") as pool:
        ids = [int(i) for i in job.item_ids]
        for start in range(0, len(ids), 64):
            lease.check()  # cancelled or lost: stop between batches
            list(pool.map(one, ids[start:start + 64]))
    lease.check()
    with get_sessionmaker()() as db:
        row = db.get_one(PreferenceGenerationJob, job.id)
        done, failed = row.done_items, row.failed_items
        status = "failed" if failed and not done else "succeeded"
        lease.finish(status, db, error=(f"{failed} item(s) failed; last error: {failures[-1]}"
                                        if failures else None))
        db.commit()
    return {"status": status, "done": done, "failed": failed}
