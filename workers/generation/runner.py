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
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update

from service.core.db import get_sessionmaker
from service.core.errors import Invalid
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
)
from service.samples import formats, store
from service.samples.validation import SampleInvalid
from workers import jobs as kit
from workers.generation import batching, shapes

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
    writer: batching.Writer = field(init=False)
    feed: batching.Feed = field(init=False)


@dataclass
class Attempt:
    """One run of one unit: what it cost so far (every request, also those that failed), and
    whether a writer already stored that cost with the unit's outcome."""

    unit_id: int
    number: int  # the unit's attempts after the claim
    usage: llm.Usage = field(default_factory=llm.Usage)
    recorded: bool = False
    submitted: bool = False  # its outcome went to the writer, which records the cost from then on
    truncated: bool = False  # an answer cut off by the budget was kept (``keep_truncated``)


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
    ctx.writer = batching.Writer(lease, _record_usage)
    ctx.feed = batching.Feed(job_id, threads, ctx.writer)
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"gen{job_id}") as pool:
            futures = [pool.submit(_work, ctx) for _ in range(threads)]
            while True:  # the job's counters follow the units once a second, not per unit
                done, running = wait(futures, timeout=PROGRESS_SECONDS,
                                     return_when=FIRST_EXCEPTION)
                _flush_progress(ctx)
                if not running or any(f.exception() for f in done):
                    break
            for future in futures:
                future.result()
    finally:
        ctx.feed.release()
        ctx.writer.close()  # every outcome handed over is written (or its cost recorded)
    if lease.should_stop():  # cancelled or lost: the counters still follow what was spent
        _settle_counters(job_id)
    lease.check()  # paused, cancelled or lost while the last units ran: not ours to close
    return _close(ctx)


def _recover_units(db: Any, job_id: int) -> None:
    """We hold the job: units left ``running`` belong to a runner that died. Back to pending,
    or failed once they were running ``MAX_UNIT_ATTEMPTS`` times."""
    db.execute(update(GenerationUnit).where(
        GenerationUnit.job_id == job_id, GenerationUnit.status == "running",
        GenerationUnit.attempts >= MAX_UNIT_ATTEMPTS).values(
        status="failed", leased_until=None, error_code="worker_died",
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
    """A unit this runner holds, with what running it needs (read in the claim's session)."""

    id: int
    attempt: int
    key: str
    target: int | None  # judge units: the sample under judgement
    chunk: Chunk | None
    pair: dict[str, Any] | None = None  # a genre–audience fan-out's pair (id, genre, audience)


def _work(ctx: Context) -> None:
    """One thread: run claimed units until none is left or the runner must stop."""
    while not (ctx.lease.should_stop() or ctx.writer.stopped):
        claimed = ctx.feed.next()
        if claimed is None:
            return
        try:
            _run_unit(ctx, claimed)
        except kit.LeaseLost:
            return


def _check(ctx: Context) -> None:
    """Before each model call: stop when the job was paused, cancelled or lost (the thread's
    last outcome settled first, see :meth:`batching.Writer.wait_own`)."""
    ctx.writer.wait_own()
    if ctx.lease.should_stop(max_age=0.5) or ctx.writer.stopped:
        raise kit.LeaseLost(f"generation job {ctx.job_id}")


def _call(ctx: Context, attempt: Attempt, messages: list[dict[str, str]],
          parser: dict[str, Any], params: dict[str, Any], lang: str,
          check: shapes.Check | None = None) -> llm.ParsedResult:
    """One parsed model call; its cost goes to ``attempt.usage`` whatever happens. An answer cut
    off by the token budget is sent again once with twice the budget, then fails
    (:class:`llm.Truncated`): it never becomes a sample, unless the job asks for drafts with a
    deliberately small budget (``params.keep_truncated``: kept, tagged ``truncated``)."""
    _check(ctx)
    length_retries = None if ctx.params.get("keep_truncated") else 1
    kind = parser.get("kind", "text")
    options = {k: v for k, v in parser.items() if k != "kind"}
    usage = attempt.usage
    if ctx.provider.kind == "local":
        from workers.generation import local  # lazy: torch

        try:
            res = local.chat_parsed(ctx.provider.model, messages, kind, parser_options=options,
                                    params=params, usage=usage, check=check,
                                    length_retries=length_retries, lang=lang,
                                    should_stop=lambda: ctx.lease.should_stop(max_age=0.5))
        except local.Stopped as exc:
            raise kit.LeaseLost(f"generation job {ctx.job_id}") from exc
        attempt.truncated |= res.result.finish_reason == "length"
        return res
    before = usage.prompt_tokens + usage.completion_tokens
    try:
        res = llm.chat_parsed(generation_service.provider_settings(ctx.provider), messages,
                              kind, parser_options=options, params=params, limiter=ctx.limiter,
                              max_repairs=2, lang=lang, usage=usage, check=check,
                              length_retries=length_retries)
        attempt.truncated |= res.result.finish_reason == "length"
        return res
    finally:
        rate = getattr(ctx.limiter, "rate", None)
        if rate is not None:
            rate.record_tokens(usage.prompt_tokens + usage.completion_tokens - before)


# a sample's message columns (``store.message_columns``: messages, content_hash, search_text)
# and the model's reasoning
Conversation = tuple[dict[str, Any], str | None]


def _samples_for(ctx: Context, attempt: Attempt, value: Any, prompt: str,
                 chunk: Chunk | None, params: dict[str, Any] | None = None
                 ) -> list[Conversation]:
    """Turn a parsed answer (its shape checked by ``shapes``) into canonical conversations
    (plus reasoning); one more call per question for Q→A. ``params``: the job's, with a
    genre–audience pair's variables when the unit has one."""
    out: list[tuple[list[dict[str, Any]], str | None]] = []
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
            res = _call(ctx, attempt, [{"role": "user", "content": rendered}],
                        answer_t.parser or {"kind": "text"}, params.get("sampling", {}),
                        answer_t.lang)
            out.append((sys_msgs + [{"role": "user", "content": question},
                                    {"role": "assistant", "content": str(res.value)}],
                        res.result.reasoning))
    elif kind == "instruction":
        for item in value:
            out.append((formats.from_alpaca({"instruction": item["instruction"],
                                             "input": item.get("input", ""),
                                             "output": item["output"],
                                             **({"system": system} if system else {})}), None))
    elif kind == "dialogue":
        out.append((sys_msgs + value, None))
    else:  # keywords / custom: the rendered prompt is the user turn, the output the answer
        answer = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append((sys_msgs + [{"role": "user", "content": prompt},
                                {"role": "assistant", "content": answer}], None))
    # the one validation gate (``service/samples/store.py``): a conversation it refuses fails
    # the unit with the gate's reason; the columns carry the content hash and the search text
    return [(store.message_columns(msgs), reasoning) for msgs, reasoning in out]


_UNIT_ERRORS = (llm.LLMError, parsers.ParseFailure, formats.FormatError, Invalid, KeyError,
                TypeError, ValueError)


def _reason(exc: BaseException) -> str:
    """The failure's code for the unit's ``error_code`` and the job's summary."""
    if isinstance(exc, SampleInvalid):
        return "invalid_sample"
    if isinstance(exc, llm.LLMError):
        return exc.kind if isinstance(exc, llm.Truncated) else f"llm_{exc.kind}"[:40]
    if isinstance(exc, parsers.WrongShape):
        return "wrong_shape"
    if isinstance(exc, parsers.ParseFailure):
        return "parse_failed"
    if isinstance(exc, formats.FormatError):
        return "wrong_shape"
    if isinstance(exc, Invalid):
        return "template_error"
    return "error"


def _message(exc: BaseException) -> str:
    if isinstance(exc, SampleInvalid):
        return f"the validation gate refused the sample: {exc.field}: {exc.message}"
    if isinstance(exc, parsers.WrongShape):
        return f"the answer does not have the shape the template asks for: {exc.message}"
    if isinstance(exc, (KeyError, TypeError, ValueError)) and not isinstance(
            exc, parsers.ParseFailure):
        return f"the answer could not be used ({type(exc).__name__}: {exc})"
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


def _run_unit(ctx: Context, claimed: Claimed) -> None:
    """One attempt of a unit; whatever ends it (done, failed, to be retried, cancelled, lost),
    what it cost is added to the unit's row."""
    attempt = Attempt(unit_id=claimed.id, number=claimed.attempt)
    try:
        _attempt(ctx, claimed, attempt)
    finally:
        if not (attempt.recorded or attempt.submitted):
            _record_usage(attempt)


def _attempt(ctx: Context, claimed: Claimed, attempt: Attempt) -> None:
    started = time.perf_counter()
    if ctx.template.kind == "judge":
        try:
            score, rationale, res = _judge(ctx, attempt, claimed.target)
        except _UNIT_ERRORS as exc:
            _unit_failed(ctx, attempt, _message(exc), getattr(exc, "raw", None), _reason(exc))
            return
        _write_judgement(ctx, attempt, claimed.target, score, rationale, res,
                         int((time.perf_counter() - started) * 1000))
        return
    raw = None
    params = ctx.params
    if claimed.pair is not None:  # the pair's genre and audience reach the unit's prompts
        params = {**params, "variables": {**(params.get("variables") or {}),
                                          "genre": claimed.pair["genre"],
                                          "audience": claimed.pair["audience"]}}
    try:
        variables = generation_service.template_variables(ctx.template, claimed.chunk, params)
        prompt = generation_service.render_template(ctx.template, variables)
        res = _call(ctx, attempt, [{"role": "user", "content": prompt}],
                    ctx.template.parser or {"kind": "text"}, ctx.params.get("sampling", {}),
                    ctx.template.lang, check=shapes.for_kind(ctx.template.kind, variables))
        raw = res.result.content
        convs = _samples_for(ctx, attempt, res.value, prompt, claimed.chunk, params)
    except _UNIT_ERRORS as exc:
        _unit_failed(ctx, attempt, _message(exc), getattr(exc, "raw", None) or raw,
                     _reason(exc))
        return
    _write_samples(ctx, attempt, claimed.key, claimed.chunk, convs, raw,
                   latency_ms=int((time.perf_counter() - started) * 1000), pair=claimed.pair)


def _usage_deltas(usage: llm.Usage, retries: int = 0) -> dict[str, int]:
    """This attempt's cost, by the unit's usage column it adds to."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "requests": usage.requests, "repairs": usage.repairs,
            "retries": usage.retries + retries}


def _added(usage: llm.Usage, retries: int = 0) -> dict[str, Any]:
    """The unit's usage columns plus this attempt's cost (for an UPDATE)."""
    columns = GenerationUnit.__table__.c
    return {k: columns[k] + v for k, v in _usage_deltas(usage, retries).items()}


def _record_usage(attempt: Attempt) -> None:
    """An attempt that ended without its outcome written (cancelled, lost, or an error): its
    cost still counts. Not fenced: tokens were spent whoever holds the job now. The unit goes
    back to pending when it is still this attempt's (the next holder runs it again)."""
    with get_sessionmaker()() as db:
        db.execute(update(GenerationUnit).where(GenerationUnit.id == attempt.unit_id)
                   .values(**_added(attempt.usage)))
        db.execute(update(GenerationUnit).where(
            GenerationUnit.id == attempt.unit_id, GenerationUnit.status == "running",
            GenerationUnit.attempts == attempt.number).values(status="pending",
                                                              leased_until=None))
        db.commit()
    attempt.recorded = True


def _settle_counters(job_id: int) -> None:
    """The job's counters recounted from its units, whoever holds the job (a cancelled job's
    last attempts still count; a recount is right whoever writes it)."""
    with get_sessionmaker()() as db:
        db.execute(update(GenerationJob).where(GenerationJob.id == job_id)
                   .values(**_counters(db, job_id)))
        db.commit()


def _write_samples(ctx: Context, attempt: Attempt, key: str, chunk: Chunk | None,
                   convs: list[Conversation], raw: str | None, *, latency_ms: int,
                   pair: dict[str, Any] | None = None) -> None:
    """The unit's samples and its done mark, written together by the writer (fenced); when
    the samples exist already (an earlier run wrote them), the unit is done with those."""

    def done_already(db: Any) -> None:  # never a second copy of the unit's samples
        log.warning("unit %s already produced its samples", key)
        _mark_done(db, attempt, sample_id=select(Sample.id).where(
            Sample.unit_key == f"{key}#0").scalar_subquery())

    rows = [_sample_row(ctx, key, i, chunk, columns, reasoning, attempt, pair)
            for i, (columns, reasoning) in enumerate(convs)]
    done = batching.Done(unit_id=attempt.unit_id, rows=rows, raw_output=raw,
                         comment=f"generated by job {ctx.job_id}", latency_ms=latency_ms,
                         usage=_usage_deltas(attempt.usage))
    ctx.writer.submit(batching.Outcome(attempt, done=done, on_conflict=done_already))


def _mark_done(db: Any, attempt: Attempt, **values: Any) -> None:
    """The unit done with this attempt's cost, if it is still this attempt's."""
    if not db.execute(update(GenerationUnit).where(
            GenerationUnit.id == attempt.unit_id, GenerationUnit.status == "running")
            .values(status="done", error=None, error_code=None, leased_until=None,
                    **values, **_added(attempt.usage))).rowcount:
        raise batching.NotOurs


def _sample_row(ctx: Context, key: str, index: int, chunk: Chunk | None,
                columns: dict[str, Any], reasoning: str | None,
                attempt: Attempt, pair: dict[str, Any] | None = None) -> dict[str, Any]:
    """One row for a Core INSERT (which the ORM backstop does not see): ``columns`` come from
    ``store.message_columns``, so the row passed the gate and has its hash and search text."""
    provider, template, usage = ctx.provider, ctx.template, attempt.usage
    row = {
        "project_id": ctx.project_id, **columns, "status": "pending", "source": "generation", "unit_key": f"{key}#{index}",
        "chunk_id": chunk.id if chunk else None,
        "document_id": chunk.document_id if chunk else None,
        "generation_job_id": ctx.job_id,
        "domain_leaf_id": ctx.params.get("domain_leaf_id"),  # a job for one leaf of the tree
        "reasoning": reasoning if provider.keep_reasoning else None,
        "provenance": {"generation": {
            "job_id": ctx.job_id, "unit": key, "template_id": template.id,
            "template": template.name, "template_version": template.version,
            "provider_id": provider.id, "model": provider.model,
            "params": ctx.params.get("sampling", {}), "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens}},
        "tags": ["truncated"] if attempt.truncated else [], "scores": {}, "version": 1}
    if pair is not None:  # provenance records the genre–audience pair
        row["provenance"]["generation"]["ga_pair"] = pair
    return row


def _unit_failed(ctx: Context, attempt: Attempt, message: str, raw: str | None,
                 code: str = "error") -> None:
    """The attempt failed: the unit goes back to pending (a retry, counted) or fails for good
    after ``MAX_UNIT_ATTEMPTS``, or at once when the answer was still cut off with a larger
    budget; the raw output and the attempt's cost are kept either way."""
    final = attempt.number >= MAX_UNIT_ATTEMPTS or code == "truncated"

    def apply(db: Any) -> None:
        if not db.execute(update(GenerationUnit).where(
                GenerationUnit.id == attempt.unit_id, GenerationUnit.status == "running").values(
                status="failed" if final else "pending", error=message[:4000], raw_output=raw,
                error_code=code, leased_until=None,
                **_added(attempt.usage, 0 if final else 1))).rowcount:
            raise batching.NotOurs

    ctx.writer.submit(batching.Outcome(attempt, apply=apply))


def _judge(ctx: Context, attempt: Attempt, target_id: int | None
           ) -> tuple[int, str, llm.ParsedResult]:
    with get_sessionmaker()() as db:
        sample = db.get(Sample, target_id) if target_id else None
        chunk = db.get(Chunk, sample.chunk_id) if sample and sample.chunk_id else None
        db.expunge_all()
    if sample is None:
        raise Invalid("the sample no longer exists")
    prompt = generation_service.render_template(
        ctx.template, generation_service.judge_variables(sample, chunk))
    res = _call(ctx, attempt, [{"role": "user", "content": prompt}],
                ctx.template.parser or {"kind": "json"}, {"temperature": 0}, ctx.template.lang)
    value = res.value
    score = int(value["score"]) if isinstance(value, dict) else None
    if score is None or not 1 <= score <= 5:
        raise parsers.ParseFailure("score must be an integer from 1 to 5",
                                   res.result.content or "")
    return score, str(value.get("rationale", ""))[:4000], res


def _write_judgement(ctx: Context, attempt: Attempt, target_id: int | None, score: int,
                     rationale: str, res: llm.ParsedResult, latency_ms: int) -> None:
    def apply(db: Any) -> None:
        _mark_done(db, attempt, raw_output=res.result.content, latency_ms=latency_ms)
        target = db.get(Sample, target_id,
                        with_for_update=db.get_bind().dialect.name == "postgresql")
        target.scores = {**(target.scores or {}), "judge": score, "judge_rationale": rationale,
                         "judge_model": ctx.provider.model,
                         "judge_template": f"{ctx.template.name} v{ctx.template.version}"}

    ctx.writer.submit(batching.Outcome(attempt, apply=apply))


def _counters(db: Any, job_id: int) -> dict[str, Any]:
    """The job row's counters recounted from its units (so they always equal the rows)."""
    u = GenerationUnit
    sums = [func.coalesce(func.sum(c), 0) for c in (u.prompt_tokens, u.completion_tokens,
                                                     u.requests, u.retries, u.repairs)]
    rows = db.execute(select(u.status, func.count(), *sums).where(u.job_id == job_id)
                      .group_by(u.status)).all()
    by_status = {row[0]: row[1] for row in rows}
    totals = [sum(int(row[i]) for row in rows) for i in range(2, 7)]
    return {"done_units": by_status.get("done", 0), "failed_units": by_status.get("failed", 0),
            **dict(zip(("prompt_tokens", "completion_tokens", "requests", "retried", "repairs"),
                       totals, strict=True))}


def _flush_progress(ctx: Context) -> None:
    with get_sessionmaker()() as db:
        values = _counters(db, ctx.job_id)
    ctx.lease.update(**values)


def _close(ctx: Context) -> dict[str, Any]:
    """Every unit is done or failed: close the job with counters recounted from the units and,
    when units failed, a summary of why (counts by reason) and the first error."""
    lease, job_id = ctx.lease, ctx.job_id
    with get_sessionmaker()() as db:
        counts = dict(db.execute(select(GenerationUnit.status, func.count()).where(
            GenerationUnit.job_id == job_id).group_by(GenerationUnit.status)).all())
        if counts.get("pending") or counts.get("running"):
            return {"status": "incomplete"}  # a thread stopped early; the lease check said go on
        done, failed = counts.get("done", 0), counts.get("failed", 0)
        error = None
        if failed:
            first_error = db.scalar(select(GenerationUnit.error).where(
                GenerationUnit.job_id == job_id, GenerationUnit.status == "failed")
                .order_by(GenerationUnit.id).limit(1))
            reasons = ", ".join(f"{n} {code}" for code, n in generation_service.failure_summary(db, job_id).items())
            error = (f"{'all ' if not done else ''}{failed} of {done + failed} unit(s) failed "
                     f"({reasons}); first error: {first_error}")
        status = "failed" if failed and not done else "succeeded"
        lease.finish(status, db, error=error[:4000] if error else None, **_counters(db, job_id))
        db.commit()
    return {"status": status, "done": done, "failed": failed}
