"""The generation runner: works through a job's units under one lease (``workers/jobs.py``).

One runner holds a job at a time. ``provider.max_concurrency`` threads each claim one pending
unit at a time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), call the model through the provider's
cross-worker limiter, and write the unit's samples, its ``done`` mark and the job's counters in
one transaction fenced by the lease (:meth:`Lease.guard`): a runner that lost its lease, or a
job paused or cancelled meanwhile, writes nothing. A sample's ``unit_key`` is unique per project,
so a unit can never produce a second copy of its samples. Units a dead runner left ``running``
are put back to ``pending`` by the next holder; a unit that was running each of
``MAX_UNIT_ATTEMPTS`` times a runner died fails with that reason.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.core.db import get_sessionmaker
from service.core.errors import Invalid
from service.diversity import fanout
from service.generation import llm, parsers
from service.generation import service as generation_service
from service.generation.jobs import GENERATION
from service.generation.ratelimit import provider_limiter
from service.models import (
    Chunk,
    GenerationJob,
    GenerationUnit,
    LLMProvider,
    PromptTemplate,
    Sample,
    SampleRevision,
)
from service.samples import formats
from service.samples.service import content_hash
from workers import jobs as kit

log = logging.getLogger(__name__)
MAX_UNIT_ATTEMPTS = 3
# how often the job row's counters are recounted from its units while the job runs
PROGRESS_SECONDS = 1.0


@dataclass
class Context:
    """What every unit of one job needs, loaded once (detached from any session)."""

    lease: kit.Lease
    job_id: int
    project_id: int
    params: dict[str, Any]
    provider: LLMProvider
    template: PromptTemplate
    answer_t: PromptTemplate | None
    limiter: AbstractContextManager[Any]
    retried: int = 0  # retries since the last progress flush (units and HTTP calls)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_retries(self, n: int) -> None:
        if n > 0:
            with self.lock:
                self.retried += n

    def take_retries(self) -> int:
        with self.lock:
            n, self.retried = self.retried, 0
        return n


class UnitFailed(Exception):
    def __init__(self, message: str, raw: str | None = None, prompt_tokens: int = 0,
                 completion_tokens: int = 0):
        super().__init__(message)
        self.message, self.raw = message, raw
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens


def run_job(job_id: int) -> dict[str, Any]:
    """Task body for ``generation.run_job``."""
    return kit.drive(GENERATION, job_id, _body)


def _body(lease: kit.Lease) -> dict[str, Any]:
    job_id = lease.row_id
    maker = get_sessionmaker()
    with maker() as db:
        job = db.get(GenerationJob, job_id)
        provider = db.get(LLMProvider, job.provider_id)
        template = db.get(PromptTemplate, job.template_id)
        answer_id = (job.params or {}).get("answer_template_id")
        answer_t = db.get(PromptTemplate, answer_id) if answer_id else None
        ctx_values = {"job_id": job_id, "project_id": job.project_id,
                      "params": dict(job.params or {})}
        _recover_units(db, job_id)
        db.commit()
        db.expunge_all()
    if provider is None or template is None:
        raise RuntimeError("the job's provider or template was deleted")
    ctx = Context(lease=lease, provider=provider, template=template, answer_t=answer_t,
                  limiter=provider_limiter(provider), **ctx_values)
    threads = 1 if provider.kind == "local" else max(1, provider.max_concurrency)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"gen{job_id}") as pool:
        futures = [pool.submit(_work, ctx) for _ in range(threads)]
        while True:  # the job's counters follow the units once a second, not per unit
            done, running = wait(futures, timeout=PROGRESS_SECONDS, return_when=FIRST_EXCEPTION)
            _flush_progress(ctx)
            if not running or any(f.exception() for f in done):
                break
        for future in futures:
            future.result()
    lease.check()  # paused, cancelled or lost while the last units ran: not ours to close
    return _close(ctx)


def _recover_units(db: Any, job_id: int) -> None:
    """We hold the job: units left ``running`` belong to a runner that died. Back to pending,
    or failed once they were running ``MAX_UNIT_ATTEMPTS`` times."""
    db.execute(update(GenerationUnit).where(
        GenerationUnit.job_id == job_id, GenerationUnit.status == "running",
        GenerationUnit.attempts >= MAX_UNIT_ATTEMPTS).values(
        status="failed", leased_until=None,
        error=f"gave up after {MAX_UNIT_ATTEMPTS} attempts: the worker stopped while running "
              "this unit each time"))
    db.execute(update(GenerationUnit).where(
        GenerationUnit.job_id == job_id, GenerationUnit.status == "running")
        .values(status="pending", leased_until=None))
    counts = dict(db.execute(select(GenerationUnit.status, func.count()).where(
        GenerationUnit.job_id == job_id).group_by(GenerationUnit.status)).all())
    db.execute(update(GenerationJob).where(GenerationJob.id == job_id).values(
        done_units=counts.get("done", 0), failed_units=counts.get("failed", 0)))


@dataclass
class Claimed:
    """A unit this thread holds, with what running it needs (read in the claim's session)."""

    id: int
    attempt: int
    key: str
    target: int | None  # judge units: the sample under judgement
    chunk: Chunk | None
    pair: dict[str, Any] | None = None  # a genre–audience fan-out's pair (id, genre, audience)


def _claim_unit(ctx: Context) -> Claimed | None:
    """One pending unit for this thread, or None when none is left (one short transaction)."""
    with get_sessionmaker()() as db:
        sub = (select(GenerationUnit.id).where(GenerationUnit.job_id == ctx.job_id,
                                               GenerationUnit.status == "pending")
               .order_by(GenerationUnit.id).limit(1))
        if db.get_bind().dialect.name == "postgresql":
            sub = sub.with_for_update(skip_locked=True)
        row = db.execute(update(GenerationUnit).where(GenerationUnit.id == sub.scalar_subquery(),
                                                      GenerationUnit.status == "pending")
                         .values(status="running", attempts=GenerationUnit.attempts + 1)
                         .returning(GenerationUnit.id, GenerationUnit.attempts,
                                    GenerationUnit.key, GenerationUnit.sample_id,
                                    GenerationUnit.chunk_id, GenerationUnit.ga_pair_id)
                         .execution_options(synchronize_session=False)).first()
        if row is None:
            db.commit()
            return None
        chunk = db.get(Chunk, row.chunk_id) if row.chunk_id else None
        pair = fanout.pair_variables(db, row.ga_pair_id)
        db.commit()
        if chunk is not None:
            db.expunge(chunk)
    return Claimed(id=int(row.id), attempt=int(row.attempts), key=row.key, target=row.sample_id,
                   chunk=chunk, pair=pair)


def _work(ctx: Context) -> None:
    """One thread: claim and run units until none is left or the runner must stop."""
    while not ctx.lease.should_stop():
        claimed = _claim_unit(ctx)
        if claimed is None:
            return
        try:
            _run_unit(ctx, claimed)
        except kit.LeaseLost:
            return


def _check(ctx: Context) -> None:
    """Between model calls: stop when the job was paused, cancelled or lost."""
    if ctx.lease.should_stop(max_age=0.5):
        raise kit.LeaseLost(f"generation job {ctx.job_id}")


def _call(ctx: Context, messages: list[dict[str, str]], parser: dict[str, Any],
          params: dict[str, Any], lang: str) -> llm.ParsedResult:
    _check(ctx)
    kind = parser.get("kind", "text")
    options = {k: v for k, v in parser.items() if k != "kind"}
    if ctx.provider.kind == "local":
        from workers.generation import local  # lazy: torch

        try:
            return local.chat_parsed(ctx.provider.model, messages, kind, parser_options=options,
                                     params=params,
                                     should_stop=lambda: ctx.lease.should_stop(max_age=0.5))
        except local.Stopped as exc:
            raise kit.LeaseLost(f"generation job {ctx.job_id}") from exc
    result = llm.chat_parsed(generation_service.provider_settings(ctx.provider), messages, kind,
                             parser_options=options, params=params, limiter=ctx.limiter,
                             max_repairs=2, lang=lang)
    rate = getattr(ctx.limiter, "rate", None)
    if rate is not None:
        rate.record_tokens((result.result.prompt_tokens or 0)
                           + (result.result.completion_tokens or 0))
    return result


Conversation = tuple[list[dict[str, str]], str | None]


def _samples_for(ctx: Context, value: Any, prompt: str, chunk: Chunk | None,
                 params: dict[str, Any] | None = None) -> tuple[list[Conversation], int, int]:
    """Turn a parsed answer into canonical conversations (plus reasoning); extra calls for Q→A."""
    extra_prompt = extra_completion = 0
    out: list[Conversation] = []
    params = params if params is not None else ctx.params
    system = params.get("system_prompt")
    sys_msgs = [{"role": "system", "content": system}] if system else []
    kind = ctx.template.kind
    if kind == "question":
        answer_t = ctx.answer_t
        if answer_t is None:
            raise Invalid("the job has no answer template")
        for question in value:
            variables = generation_service.template_variables(answer_t, chunk,
                                                              {**params, "question": question})
            rendered = generation_service.render_template(answer_t, variables)
            res = _call(ctx, [{"role": "user", "content": rendered}],
                        answer_t.parser or {"kind": "text"}, params.get("sampling", {}),
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
                raise parsers.ParseFailure("each instruction sample must be a JSON object",
                                           json.dumps(value))
            out.append((formats.from_alpaca({"instruction": item.get("instruction", ""),
                                             "input": item.get("input", ""),
                                             "output": item.get("output", ""),
                                             **({"system": system} if system else {})}), None))
    elif kind == "dialogue":
        msgs = value.get("messages") if isinstance(value, dict) else value
        out.append((sys_msgs + [{"role": m["role"], "content": m["content"]} for m in msgs],
                    None))
    else:  # keywords / custom: the rendered prompt is the user turn, the output the answer
        answer = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append((sys_msgs + [{"role": "user", "content": prompt},
                                {"role": "assistant", "content": answer}], None))
    for msgs, _ in out:
        formats.check_messages(msgs)
    return out, extra_prompt, extra_completion


_UNIT_ERRORS = (llm.LLMError, parsers.ParseFailure, formats.FormatError, Invalid, KeyError,
                TypeError, ValueError)


def _run_unit(ctx: Context, claimed: Claimed) -> None:
    unit_id, attempt, key, target, chunk = (claimed.id, claimed.attempt, claimed.key,
                                            claimed.target, claimed.chunk)
    started = time.perf_counter()
    if ctx.template.kind == "judge":
        try:
            score, rationale, res = _judge(ctx, target)
        except _UNIT_ERRORS as exc:
            _unit_failed(ctx, unit_id, attempt, getattr(exc, "message", None) or str(exc),
                         getattr(exc, "raw", None))
            return
        _write_judgement(ctx, unit_id, target, score, rationale, res,
                         int((time.perf_counter() - started) * 1000))
        return
    raw = None
    params = ctx.params
    if claimed.pair is not None:  # the pair's genre and audience reach the unit's prompts
        params = {**params, "variables": {**(params.get("variables") or {}),
                                          "genre": claimed.pair["genre"],
                                          "audience": claimed.pair["audience"]}}
    try:
        variables = generation_service.template_variables(ctx.template, chunk, params)
        prompt = generation_service.render_template(ctx.template, variables)
        res = _call(ctx, [{"role": "user", "content": prompt}],
                    ctx.template.parser or {"kind": "text"}, ctx.params.get("sampling", {}),
                    ctx.template.lang)
        raw = res.result.content
        convs, p_extra, c_extra = _samples_for(ctx, res.value, prompt, chunk, params)
    except _UNIT_ERRORS as exc:
        _unit_failed(ctx, unit_id, attempt, getattr(exc, "message", None) or str(exc),
                     getattr(exc, "raw", raw))
        return
    _write_samples(ctx, unit_id, key, chunk, convs, raw, res,
                   prompt_tokens=(res.result.prompt_tokens or 0) + p_extra,
                   completion_tokens=(res.result.completion_tokens or 0) + c_extra,
                   latency_ms=int((time.perf_counter() - started) * 1000), attempt=attempt,
                   pair=claimed.pair)


def _write_samples(ctx: Context, unit_id: int, key: str, chunk: Chunk | None,
                   convs: list[Conversation], raw: str | None, res: llm.ParsedResult, *,
                   prompt_tokens: int, completion_tokens: int, latency_ms: int,
                   attempt: int, pair: dict[str, Any] | None = None) -> None:
    """The unit's samples, its done mark and the job's counters: one fenced transaction."""
    with get_sessionmaker()() as db:
        try:
            # the samples and their revisions in two statements, then the unit's done mark
            # (which must still be ours), then the fenced counters: one transaction
            ids: list[int] = []
            if convs:
                ids = list(db.scalars(insert(Sample).returning(Sample.id,
                                                                sort_by_parameter_order=True),
                                      [_sample_row(ctx, key, i, chunk, msgs, reasoning,
                                                   prompt_tokens, completion_tokens, pair)
                                       for i, (msgs, reasoning) in enumerate(convs)]))
                db.execute(insert(SampleRevision), [
                    {"sample_id": sid, "version": 1, "action": "create",
                     "messages_before": None, "messages_after": msgs, "status_before": None,
                     "status_after": "pending", "actor_id": None,
                     "comment": f"generated by job {ctx.job_id}"}
                    for sid, (msgs, _) in zip(ids, convs, strict=True)])
            if not db.execute(update(GenerationUnit).where(
                    GenerationUnit.id == unit_id, GenerationUnit.status == "running")
                    .values(status="done", raw_output=raw, error=None,
                            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                            latency_ms=latency_ms, leased_until=None,
                            sample_id=ids[0] if ids else None)).rowcount:
                db.rollback()
                return
            ctx.lease.fence(db)
            db.commit()
            ctx.count_retries(max(0, res.result.attempts - 1))
        except IntegrityError:  # the unit's samples exist already: never a second copy
            db.rollback()
            log.warning("unit %s already produced its samples", key)
        except kit.LeaseLost:
            db.rollback()
            raise


def _sample_row(ctx: Context, key: str, index: int, chunk: Chunk | None,
                msgs: list[dict[str, str]], reasoning: str | None, prompt_tokens: int,
                completion_tokens: int, pair: dict[str, Any] | None = None) -> dict[str, Any]:
    provider, template = ctx.provider, ctx.template
    row = {
        "project_id": ctx.project_id, "messages": msgs, "content_hash": content_hash(msgs),
        "status": "pending", "source": "generation", "unit_key": f"{key}#{index}",
        "chunk_id": chunk.id if chunk else None,
        "document_id": chunk.document_id if chunk else None,
        "generation_job_id": ctx.job_id,
        "reasoning": reasoning if provider.keep_reasoning else None,
        "provenance": {"generation": {
            "job_id": ctx.job_id, "unit": key, "template_id": template.id,
            "template": template.name, "template_version": template.version,
            "provider_id": provider.id, "model": provider.model,
            "params": ctx.params.get("sampling", {}), "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens}},
        "tags": [], "scores": {}, "version": 1}
    if pair is not None:  # provenance records the genre–audience pair
        row["provenance"]["generation"]["ga_pair"] = pair
    return row


def _unit_failed(ctx: Context, unit_id: int, attempt: int, message: str,
                 raw: str | None) -> None:
    final = attempt >= MAX_UNIT_ATTEMPTS
    with get_sessionmaker()() as db:
        changed = db.execute(update(GenerationUnit).where(
            GenerationUnit.id == unit_id, GenerationUnit.status == "running").values(
            status="failed" if final else "pending", error=message[:4000], raw_output=raw,
            leased_until=None)).rowcount
        if not changed:
            return
        try:
            ctx.lease.fence(db)
        except kit.LeaseLost:
            db.rollback()
            raise
        db.commit()
    ctx.count_retries(0 if final else 1)


def _judge(ctx: Context, target_id: int | None) -> tuple[int, str, llm.ParsedResult]:
    with get_sessionmaker()() as db:
        sample = db.get(Sample, target_id) if target_id else None
        chunk = db.get(Chunk, sample.chunk_id) if sample and sample.chunk_id else None
        db.expunge_all()
    if sample is None:
        raise Invalid("the sample no longer exists")
    prompt = generation_service.render_template(
        ctx.template, generation_service.judge_variables(sample, chunk))
    res = _call(ctx, [{"role": "user", "content": prompt}],
                ctx.template.parser or {"kind": "json"}, {"temperature": 0}, ctx.template.lang)
    value = res.value
    score = int(value["score"]) if isinstance(value, dict) else None
    if score is None or not 1 <= score <= 5:
        raise parsers.ParseFailure("score must be an integer from 1 to 5",
                                   res.result.content or "")
    return score, str(value.get("rationale", ""))[:4000], res


def _write_judgement(ctx: Context, unit_id: int, target_id: int, score: int, rationale: str,
                     res: llm.ParsedResult, latency_ms: int) -> None:
    with get_sessionmaker()() as db:
        if not db.execute(update(GenerationUnit).where(
                GenerationUnit.id == unit_id, GenerationUnit.status == "running").values(
                status="done", raw_output=res.result.content, error=None, leased_until=None,
                prompt_tokens=res.result.prompt_tokens or 0,
                completion_tokens=res.result.completion_tokens or 0,
                latency_ms=latency_ms)).rowcount:
            return
        target = db.get(Sample, target_id,
                        with_for_update=db.get_bind().dialect.name == "postgresql")
        target.scores = {**(target.scores or {}), "judge": score, "judge_rationale": rationale,
                         "judge_model": ctx.provider.model,
                         "judge_template": f"{ctx.template.name} v{ctx.template.version}"}
        try:
            ctx.lease.fence(db)
        except kit.LeaseLost:
            db.rollback()
            raise
        db.commit()


def _counters(db: Any, job_id: int) -> dict[str, Any]:
    """The job row's counters recounted from its units (so they always equal the rows)."""
    rows = db.execute(select(GenerationUnit.status, func.count(),
                             func.coalesce(func.sum(GenerationUnit.prompt_tokens), 0),
                             func.coalesce(func.sum(GenerationUnit.completion_tokens), 0))
                      .where(GenerationUnit.job_id == job_id)
                      .group_by(GenerationUnit.status)).all()
    by_status = {status: n for status, n, _, _ in rows}
    return {"done_units": by_status.get("done", 0), "failed_units": by_status.get("failed", 0),
            "prompt_tokens": sum(int(p) for _, _, p, _ in rows),
            "completion_tokens": sum(int(c) for _, _, _, c in rows)}


def _flush_progress(ctx: Context) -> None:
    with get_sessionmaker()() as db:
        values = _counters(db, ctx.job_id)
    ctx.lease.update(retried=GenerationJob.retried + ctx.take_retries(), **values)


def _close(ctx: Context) -> dict[str, Any]:
    """Every unit is done or failed: close the job with counters recounted from the units."""
    lease, job_id = ctx.lease, ctx.job_id
    with get_sessionmaker()() as db:
        counts = dict(db.execute(select(GenerationUnit.status, func.count()).where(
            GenerationUnit.job_id == job_id).group_by(GenerationUnit.status)).all())
        if counts.get("pending") or counts.get("running"):
            return {"status": "incomplete"}  # a thread stopped early; the lease check said go on
        done, failed = counts.get("done", 0), counts.get("failed", 0)
        first_error = db.scalar(select(GenerationUnit.error).where(
            GenerationUnit.job_id == job_id, GenerationUnit.status == "failed")
            .order_by(GenerationUnit.id).limit(1))
        if failed and not done:
            status, error = "failed", f"all {failed} unit(s) failed; first error: {first_error}"
        else:
            status = "succeeded"
            error = (f"{failed} unit(s) failed; first error: {first_error}" if failed else None)
        lease.finish(status, db, error=error[:4000] if error else None,
                     retried=GenerationJob.retried + ctx.take_retries(),
                     **_counters(db, job_id))
        db.commit()
    return {"status": status, "done": done, "failed": failed}
