"""Comparison items and their candidates: create, import, from SFT samples, list; and the jobs
that draft missing candidates or have an LLM judge pre-rank the pairs (the runner is
``workers/preferences/runner.py``)."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.errors import Invalid, NotFound
from service.core.lookup import get_in_project, in_project
from service.core.pagination import paginate
from service.generation import service as generation_service
from service.models import (
    Chunk,
    PreferenceCandidate,
    PreferenceDecision,
    PreferenceGenerationJob,
    PreferenceItem,
    Sample,
)
from service.models.preference import ItemStatus, Outcome
from service.preferences.jobs import GENERATE

ROLES = ("system", "user", "assistant")


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(message, details=[{"field": field, "message": message}])


def check_prompt(messages: Any, field: str = "body.prompt") -> list[dict[str, str]]:
    """The prompt as ``[{role, content}]``: an optional system turn first, alternating user and
    assistant turns, ending with a user turn. A bare string is one user turn."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list) or not messages:
        raise _invalid(field, "the prompt must be text or a non-empty list of messages")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise _invalid(f"{field}.{i}", "each message needs a role (system, user, assistant) "
                                           "and text content")
        out.append({"role": m["role"], "content": m["content"]})
    turns = out[1:] if out[0]["role"] == "system" else out
    if not turns or any(m["role"] != ("user" if i % 2 == 0 else "assistant")
                        for i, m in enumerate(turns)):
        raise _invalid(field, "after an optional system turn the prompt alternates user and "
                              "assistant turns, starting with a user turn")
    if turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
        raise _invalid(field, "the prompt ends with a non-empty user turn")
    return out


def _answer(value: Any, field: str) -> str:
    """A candidate's text: a string, one assistant message, or a list holding one."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict) and value.get("role") == "assistant":
        value = value.get("content")
    if not isinstance(value, str) or not value.strip():
        raise _invalid(field, "a response is non-empty text or one assistant message")
    return value


def create_item(db: Session, *, project_id: int, prompt: Any, candidates: Sequence[dict[str, Any]] = (),
                chunk_id: int | None = None, source: str = "manual", unit_key: str | None = None,
                sample_id: int | None = None, actor_id: int | None = None,
                decided: bool = False) -> PreferenceItem:
    """An item with its candidates. ``decided``: the first candidate is preferred over the
    second (an imported pair), so the item needs no review."""
    messages = check_prompt(prompt)
    document_id = None
    if chunk_id is not None:
        chunk = in_project(db, Chunk, chunk_id, project_id=project_id)
        if chunk is None:
            raise _invalid("body.chunk_id", "no such chunk in this project")
        document_id = chunk.document_id
    item = PreferenceItem(project_id=project_id, prompt=messages, chunk_id=chunk_id,
                          document_id=document_id, sample_id=sample_id, source=source,
                          unit_key=unit_key, status=ItemStatus.pending.value,
                          created_by_id=actor_id)
    db.add(item)
    db.flush()
    rows = []
    for i, cand in enumerate(candidates):
        rows.append(PreferenceCandidate(item_id=item.id, position=i,
                                        content=_answer(cand.get("content"), f"body.candidates.{i}"),
                                        provenance=dict(cand.get("provenance") or {})))
    db.add_all(rows)
    db.flush()
    if decided:
        if len(rows) < 2:
            raise _invalid("body.candidates", "a decided pair has a chosen and a rejected response")
        item.status = ItemStatus.decided.value
        item.outcome = Outcome.preferred.value
        item.chosen_id, item.rejected_id = rows[0].id, rows[1].id
        item.resolved_by_id = actor_id
        db.flush()
    return item


def import_items(db: Session, *, project_id: int, records: Sequence[dict[str, Any]],
                 actor_id: int | None) -> dict[str, Any]:
    """Records with ``prompt`` and ``chosen``/``rejected`` (a decided pair, TRL's standard or
    conversational shape) or ``candidates`` (to review). A bad record is reported, not fatal."""
    imported = decided = 0
    errors: list[dict[str, Any]] = []
    for n, record in enumerate(records):
        field = f"body.records.{n}"
        try:
            with db.begin_nested():
                if not isinstance(record, dict) or "prompt" not in record:
                    raise _invalid(field, "a record has a prompt")
                prov = {"import": {"line": n + 1}}
                if "chosen" in record or "rejected" in record:
                    cands = [{"content": _answer(record.get("chosen"), f"{field}.chosen"),
                              "provenance": {**prov, "label": "chosen"}},
                             {"content": _answer(record.get("rejected"), f"{field}.rejected"),
                              "provenance": {**prov, "label": "rejected"}}]
                    create_item(db, project_id=project_id, prompt=record["prompt"],
                                candidates=cands, source="import", actor_id=actor_id, decided=True)
                    decided += 1
                else:
                    raw = record.get("candidates") or []
                    if not isinstance(raw, list) or len(raw) < 2:
                        raise _invalid(f"{field}.candidates", "two or more candidates")
                    cands = [c if isinstance(c, dict) and "content" in c
                             else {"content": _answer(c, f"{field}.candidates.{i}")}
                             for i, c in enumerate(raw)]
                    cands = [{"content": c["content"],
                              "provenance": {**prov, **dict(c.get("provenance") or {})}} for c in cands]
                    create_item(db, project_id=project_id, prompt=record["prompt"],
                                candidates=cands, source="import", actor_id=actor_id)
                imported += 1
        except Invalid as exc:
            detail = exc.details[0] if exc.details else {"field": field, "message": exc.message}
            errors.append({"record": n, **detail})
    return {"imported": imported, "decided": decided, "errors": errors[:200]}


def items_from_samples(db: Session, *, project_id: int, sample_ids: Sequence[int] | None,
                       limit: int, actor_id: int | None) -> list[PreferenceItem]:
    """One item per accepted sample (idempotent: ``unit_key`` ``sample:<id>``): the prompt is the
    conversation before its last assistant turn, candidate 0 that accepted answer."""
    stmt = select(Sample).where(Sample.project_id == project_id, Sample.status == "accepted")
    if sample_ids:
        stmt = stmt.where(Sample.id.in_(list(sample_ids)))
    taken = select(PreferenceItem.sample_id).where(PreferenceItem.project_id == project_id,
                                                   PreferenceItem.sample_id.is_not(None))
    stmt = stmt.where(Sample.id.not_in(taken)).order_by(Sample.id).limit(limit)
    out = []
    for sample in db.scalars(stmt):
        msgs = [{"role": m["role"], "content": m["content"]} for m in sample.messages]
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            continue
        cand = {"content": msgs[-1]["content"],
                "provenance": {"sample": {"id": sample.id, "version": sample.version,
                                          "status": sample.status},
                               **({"generation": sample.provenance["generation"]}
                                  if (sample.provenance or {}).get("generation") else {})}}
        out.append(create_item(db, project_id=project_id, prompt=msgs[:-1], candidates=[cand],
                               chunk_id=sample.chunk_id, source="sample",
                               unit_key=f"sample:{sample.id}", sample_id=sample.id,
                               actor_id=actor_id))
    return out


def get_item(db: Session, *, project_id: int, item_id: int) -> PreferenceItem:
    return get_in_project(db, PreferenceItem, item_id, project_id=project_id, what="comparison item",
                          code="item_not_found")


def list_items(db: Session, *, project_id: int, status: str | None, limit: int,
               cursor: str | None) -> tuple[list[PreferenceItem], str | None]:
    stmt = select(PreferenceItem).where(PreferenceItem.project_id == project_id)
    if status:
        stmt = stmt.where(PreferenceItem.status == status)
    return paginate(db, stmt, PreferenceItem.id, limit=limit, cursor=cursor)


def candidates_of(db: Session, item_id: int) -> list[PreferenceCandidate]:
    return list(db.scalars(select(PreferenceCandidate).where(PreferenceCandidate.item_id == item_id)
                           .order_by(PreferenceCandidate.position)))


def display_order(item_id: int, candidates: Sequence[PreferenceCandidate]) -> list[PreferenceCandidate]:
    """The order a reviewer sees the candidates in: fixed per item, independent of which source
    drafted which, so no source is always on the left (position bias)."""
    return sorted(candidates, key=lambda c: (hashlib.sha256(f"{item_id}:{c.id}".encode()).digest(), c.id))


def item_read(db: Session, item: PreferenceItem) -> dict[str, Any]:
    data = {c: getattr(item, c) for c in ("id", "project_id", "prompt", "chunk_id", "document_id",
                                          "sample_id", "source", "status", "outcome", "chosen_id",
                                          "rejected_id", "chosen_text", "judge", "created_at")}
    data["candidates"] = candidates_of(db, item.id)
    return data


def decisions_of(db: Session, item_id: int) -> list[PreferenceDecision]:
    return list(db.scalars(select(PreferenceDecision).where(PreferenceDecision.item_id == item_id)
                           .order_by(PreferenceDecision.id)))


def status_counts(db: Session, *, project_id: int) -> dict[str, int]:
    rows = db.execute(select(PreferenceItem.status, func.count()).where(
        PreferenceItem.project_id == project_id).group_by(PreferenceItem.status)).all()
    return {str(k): int(v) for k, v in rows}


# --- candidate generation -------------------------------------------------------------------


def create_generation_job(db: Session, *, project_id: int, sources: Sequence[dict[str, Any]],
                          item_ids: Sequence[int] | None, actor_id: int | None
                          ) -> PreferenceGenerationJob:
    """A job drafting candidate ``i`` from ``sources[i]`` for every chosen item that lacks it."""
    resolved = []
    for i, src in enumerate(sources):
        try:
            provider = generation_service.get_provider(db, project_id=project_id,
                                                       provider_id=src["provider_id"])
        except NotFound as exc:
            raise _invalid(f"body.sources.{i}.provider_id", "no such provider") from exc
        resolved.append({"provider_id": provider.id, "model": provider.model,
                         "kind": provider.kind, "params": dict(src.get("params") or {})})
    have = (select(PreferenceCandidate.item_id).group_by(PreferenceCandidate.item_id)
            .having(func.count() >= len(resolved)))
    ids = _chosen_ids(db, project_id, PreferenceItem.id.not_in(have), item_ids)
    if not ids:
        raise _invalid("body.item_ids", "no item is missing a candidate")
    heavy = any(generation_service.heavy_queue(generation_service.get_provider(
        db, project_id=project_id, provider_id=s["provider_id"])) for s in resolved)
    job = PreferenceGenerationJob(project_id=project_id, sources=resolved, item_ids=ids,
                                  total_items=len(ids), status="queued", created_by_id=actor_id,
                                  queue="gpu" if heavy else None)
    db.add(job)
    db.flush()
    jobs.enqueue(db, GENERATE, job)
    return job


def get_generation_job(db: Session, *, project_id: int, job_id: int) -> PreferenceGenerationJob:
    return get_in_project(db, PreferenceGenerationJob, job_id, project_id=project_id, what="generation job",
                          code="job_not_found")


def create_prerank_job(db: Session, *, project_id: int, judge_provider_id: int,
                       item_ids: Sequence[int] | None, params: dict[str, Any] | None,
                       actor_id: int | None) -> PreferenceGenerationJob:
    """A job in which an LLM judge pre-ranks the pair each chosen item shows its reviewers (the
    first two candidates in display order), in both orders (``service.preferences.judge``),
    into ``item.judge``. Items the same judge ranked already are left as they are. It is a
    ``PreferenceGenerationJob`` whose one source has ``role: judge``; the same runner, queue,
    lease and counters as candidate drafting."""
    provider = judge_provider(db, project_id=project_id, provider_id=judge_provider_id)
    ready = (select(PreferenceCandidate.item_id).group_by(PreferenceCandidate.item_id)
             .having(func.count() >= 2))
    ids = _chosen_ids(db, project_id, PreferenceItem.id.in_(ready), item_ids)
    if not ids:
        raise _invalid("body.item_ids", "no item with two candidates to rank")
    job = PreferenceGenerationJob(
        project_id=project_id, item_ids=ids, total_items=len(ids), status="queued",
        created_by_id=actor_id, sources=[{"role": "judge", "provider_id": provider.id,
                                          "model": provider.model, "kind": provider.kind,
                                          "params": dict(params or {})}])
    db.add(job)
    db.flush()
    jobs.enqueue(db, GENERATE, job)
    return job


def _chosen_ids(db: Session, project_id: int, condition: Any,
                item_ids: Sequence[int] | None) -> list[int]:
    """The project's items meeting ``condition``, among ``item_ids`` when given, in id order."""
    stmt = select(PreferenceItem.id).where(PreferenceItem.project_id == project_id, condition)
    if item_ids:
        stmt = stmt.where(PreferenceItem.id.in_(list(item_ids)))
    return [int(i) for i in db.scalars(stmt.order_by(PreferenceItem.id))]


def judge_provider(db: Session, *, project_id: int, provider_id: int | None,
                   field: str = "body.judge_provider_id") -> Any:
    """The project's provider to judge with: an OpenAI-compatible endpoint (422 naming
    ``field`` otherwise)."""
    if provider_id is None:
        raise _invalid(field, "a judge provider is required")
    try:
        provider = generation_service.get_provider(db, project_id=project_id,
                                                   provider_id=provider_id)
    except NotFound as exc:
        raise _invalid(field, "provider not found in this project") from exc
    if provider.kind == "local":
        raise _invalid(field, "the judge is an OpenAI-compatible endpoint")
    return provider
