"""What Start will do, before it does it: units, prompts, estimated tokens and time (from the
provider's measured latency), and whether the form should ask first.

Read-only: it selects exactly what ``service.create_job`` would and writes nothing."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.errors import Invalid
from service.diversity.steps import TEMPLATE_KINDS as DIVERSITY_KINDS
from service.generation import service as generation_service
from service.generation.schemas import JobCreate
from service.models import Chunk, Document, GenerationJob, GenerationUnit, PromptTemplate, Sample

LARGE_JOB_UNITS = 300  # the form asks before starting more units than this
SECOND_STAGE_KINDS = {"answer"}  # run by a question job (its answer_template_id), never alone
CHARS_PER_TOKEN = 4  # rough, for the template's own text and answers (chunks carry token counts)
DEFAULT_COMPLETION_TOKENS = 256
JUDGED_SAMPLE_TOKENS = 300  # a sample and its source, as a judge prompt sees them (rough)
MEASURED_UNITS = 200  # the provider's latest finished units give its latency and answer length


class ProviderStats(BaseModel):
    units: int = Field(description="finished units the figures come from (0: no measurement yet)")
    latency_s: float | None = None
    completion_tokens: float | None = None


class JobPlan(BaseModel):
    kind: str
    template: str
    units: int = Field(description="units Start will create (already generated ones are skipped)")
    skipped_units: int = Field(description="units this template version already ran")
    chunks: int
    prompts: int = Field(description="LLM calls: a question unit also asks one answer per question")
    estimated_prompt_tokens: int
    estimated_completion_tokens: int
    estimated_seconds: float | None = Field(description="from the provider's measured latency and "
                                                        "its max concurrency; null before any run")
    provider: ProviderStats
    confirm: bool = Field(description=f"more than {LARGE_JOB_UNITS} units: ask before starting")
    threshold: int = LARGE_JOB_UNITS
    notes: list[str] = Field(default_factory=list)


def first_stage_templates(templates: list[PromptTemplate]) -> list[PromptTemplate]:
    """Templates a generation job may start with (not an answer stage, not a diversity step)."""
    return [t for t in templates
            if t.kind not in SECOND_STAGE_KINDS and t.kind not in DIVERSITY_KINDS]


def provider_stats(db: Session, *, provider_id: int) -> ProviderStats:
    recent = (select(GenerationUnit.latency_ms, GenerationUnit.completion_tokens)
              .join(GenerationJob, GenerationJob.id == GenerationUnit.job_id)
              .where(GenerationJob.provider_id == provider_id, GenerationUnit.status == "done",
                     GenerationUnit.latency_ms > 0)
              .order_by(GenerationUnit.id.desc()).limit(MEASURED_UNITS).subquery())
    n, latency, completion = db.execute(select(func.count(), func.avg(recent.c.latency_ms),
                                               func.avg(recent.c.completion_tokens))).one()
    if not n:
        return ProviderStats(units=0)
    return ProviderStats(units=n, latency_s=float(latency) / 1000, completion_tokens=float(completion))


def _questions(params: dict[str, Any], chars: int) -> int:
    """Questions per chunk, as ``service.template_variables`` derives them."""
    return int(params.get("n") or max(1, min(10, chars // 400 + 1)))


def plan_job(db: Session, *, project_id: int, body: JobCreate) -> JobPlan:
    template = generation_service.get_template(db, project_id=project_id, template_id=body.template_id)
    provider = generation_service.get_provider(db, project_id=project_id, provider_id=body.provider_id)
    if template.kind in SECOND_STAGE_KINDS:
        raise Invalid(f"{template.name} answers questions that a question job asks: start a question "
                      "template and choose this one as its answer template",
                      code="second_stage_template",
                      details=[{"field": "body.template_id", "message": "a second-stage template"}])
    stats = provider_stats(db, provider_id=provider.id)
    overhead = len(template.text) // CHARS_PER_TOKEN
    answer_tokens = stats.completion_tokens or float(
        ((body.params.get("sampling") or {}).get("max_tokens")) or DEFAULT_COMPLETION_TOKENS)
    notes: list[str] = []
    if template.kind == "judge":
        stmt = select(Sample.id).where(Sample.project_id == project_id)
        if body.params.get("sample_ids"):
            stmt = stmt.where(Sample.id.in_(body.params["sample_ids"]))
        else:
            stmt = stmt.where(Sample.status.in_(body.params.get("statuses") or ["pending"]))
        rows = [(f"judge:t{template.id}v{template.version}:s{sid}", 1, JUDGED_SAMPLE_TOKENS)
                for sid in db.scalars(stmt)]
        chunks = 0
    else:
        stmt = (select(Chunk.id, Chunk.token_count, func.length(Chunk.text))
                .join(Document, Document.id == Chunk.document_id)
                .where(Chunk.project_id == project_id, Document.status == "parsed"))
        if body.document_ids:
            stmt = stmt.where(Chunk.document_id.in_(body.document_ids))
        if body.chunk_ids:
            stmt = stmt.where(Chunk.id.in_(body.chunk_ids))
        chunk_rows = {cid: (tokens, chars) for cid, tokens, chars in db.execute(stmt).all()}
        chunks = len(chunk_rows)
        rows = []
        # the job's own keys (a genre–audience fan-out has one unit per chunk and pair)
        keys = generation_service._unit_keys(db, project_id, template, sorted(chunk_rows),
                                             body.samples_per_chunk, body.params) if chunk_rows else {}
        for key, (cid, _i, _pair) in keys.items():
            tokens, chars = chunk_rows[cid]
            calls = 1 + _questions(body.params, chars or 0) if template.kind == "question" else 1
            rows.append((key, calls, int(tokens or 0)))
        if template.kind == "question":
            notes.append("each question unit asks its questions, then one answer per question")
        if not body.document_ids and not body.chunk_ids:
            notes.append("every parsed document of the project")
    existing = generation_service._existing_keys(db, [key for key, _calls, _t in rows])
    todo = [(calls, tokens) for key, calls, tokens in rows if key not in existing]
    prompts = sum(calls for calls, _t in todo)
    prompt_tokens = sum(calls * (tokens + overhead) for calls, tokens in todo)
    completion_tokens = int(prompts * answer_tokens)
    seconds = None
    if stats.latency_s is not None:
        seconds = prompts * stats.latency_s / max(1, provider.max_concurrency or 1)
    return JobPlan(kind=template.kind, template=template.name, units=len(todo), skipped_units=len(existing),
                   chunks=chunks, prompts=prompts, estimated_prompt_tokens=prompt_tokens,
                   estimated_completion_tokens=completion_tokens, estimated_seconds=seconds,
                   provider=stats, confirm=len(todo) > LARGE_JOB_UNITS, notes=notes)
