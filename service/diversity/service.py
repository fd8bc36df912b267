"""Coverage and diversity (the API side): the jobs that build the domain tree, tag samples with a
leaf, propose genre–audience pairs and distil from a topic; the pairs themselves.

Each job is a ``DiversityJob`` row driven by ``workers/diversity/runner.py`` under the job kit.
Its prompts are the built-in templates of the step's kind and language
(``templates/prompts/{kind}.{lang}.j2``), or a project's own template of that kind (the latest
version of the same name overrides the built-in; ``params.template_id`` names one outright).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.errors import Conflict, Invalid
from service.core.lookup import get_in_project
from service.diversity.jobs import DIVERSITY
from service.diversity.steps import STEP_KINDS
from service.generation import service as generation_service
from service.models import Chunk, DiversityJob, Document, DomainNode, GAPair, PromptTemplate

LANGS = ("en", "zh")
MAX_PAIRS = 20


def _invalid(field_name: str, message: str) -> Invalid:
    return Invalid(message, details=[{"field": field_name, "message": message}])


def step_template(db: Session, *, project_id: int, kind: str, lang: str,
                  template_id: int | None = None, field_name: str = "body.template_id"
                  ) -> PromptTemplate:
    """The template a step renders: ``template_id`` (of that kind), else the project's latest
    template named like the built-in (``kind.lang``), else the built-in."""
    if template_id is not None:
        t = generation_service.get_template(db, project_id=project_id, template_id=template_id)
        if t.kind != kind:
            raise _invalid(field_name, f"a template of kind {kind!r} (this one is {t.kind!r})")
        return t
    generation_service.ensure_builtin_templates(db)
    name = f"{kind}.{lang}"
    own = db.scalar(select(PromptTemplate).where(PromptTemplate.project_id == project_id,
                                                 PromptTemplate.name == name)
                    .order_by(PromptTemplate.version.desc()).limit(1))
    if own is not None:
        return own
    builtin = db.scalar(select(PromptTemplate).where(PromptTemplate.project_id.is_(None),
                                                     PromptTemplate.name == name))
    if builtin is None:
        raise _invalid("body.lang", f"no built-in {kind} template in {lang!r}")
    return builtin


def _templates(db: Session, project_id: int, kind: str, params: dict[str, Any]) -> dict[str, int]:
    lang = params.get("lang", "en")
    if lang not in LANGS:
        raise _invalid("body.lang", f"one of {', '.join(LANGS)}")
    given = params.get("templates") or {}
    return {step: step_template(db, project_id=project_id, kind=step, lang=lang,
                                template_id=given.get(step),
                                field_name=f"body.templates.{step}").id
            for step in STEP_KINDS[kind]}


def create_job(db: Session, *, project_id: int, kind: str, provider_id: int,
               params: dict[str, Any], actor_id: int | None) -> DiversityJob:
    """Store a job and send its runner once the transaction commits."""
    if kind not in STEP_KINDS:
        raise ValueError(f"unknown diversity job kind {kind!r}")  # the routes name the kind
    provider = generation_service.get_provider(db, project_id=project_id, provider_id=provider_id)
    params = {k: v for k, v in params.items() if v is not None}
    params["templates"] = _templates(db, project_id, kind, params)
    if kind == "tree":
        _check_tree_job(db, project_id, params)
    elif kind == "tag":
        if not _leaf_count(db, project_id):
            raise Conflict("the project has no domain tree to tag with: build or write one first",
                           code="no_tree")
    elif kind == "ga":
        params["document_ids"] = _documents(db, project_id, params.get("document_ids"))
    elif kind == "distill":
        _check_distill(db, project_id, params)
    job = DiversityJob(project_id=project_id, kind=kind, provider_id=provider.id, params=params,
                       result={}, status="queued", queue=generation_service.heavy_queue(provider),
                       created_by_id=actor_id)
    db.add(job)
    db.flush()
    jobs.enqueue(db, DIVERSITY, job)
    return job


def _leaf_count(db: Session, project_id: int) -> int:
    return db.scalar(select(func.count()).select_from(DomainNode)
                     .where(DomainNode.project_id == project_id)) or 0


def _check_tree_job(db: Session, project_id: int, params: dict[str, Any]) -> None:
    if _leaf_count(db, project_id) and not params.get("replace"):
        raise Conflict("the project has a domain tree already: edit it, or build again with "
                       "replace (its samples then keep no leaf)", code="tree_exists")
    if not db.scalar(select(func.count()).select_from(Chunk).join(
            Document, Document.id == Chunk.document_id).where(
            Chunk.project_id == project_id, Document.status == "parsed")):
        raise Conflict("the project has no parsed document to build a tree from",
                       code="no_documents")


def _documents(db: Session, project_id: int, ids: list[int] | None) -> list[int]:
    stmt = select(Document.id).where(Document.project_id == project_id,
                                     Document.status == "parsed")
    if ids:
        stmt = stmt.where(Document.id.in_(ids))
    found = list(db.scalars(stmt.order_by(Document.id)))
    if not found:
        raise _invalid("body.document_ids", "no parsed document of this project matches")
    return found


def _check_distill(db: Session, project_id: int, params: dict[str, Any]) -> None:
    if params.get("use_tree"):
        if not _leaf_count(db, project_id):
            raise _invalid("body.use_tree", "the project has no domain tree")
    elif not str(params.get("topic") or "").strip():
        raise _invalid("body.topic", "a topic to distil from (or use_tree)")


def get_job(db: Session, *, project_id: int, job_id: int) -> DiversityJob:
    return get_in_project(db, DiversityJob, job_id, project_id=project_id, what="diversity job",
                          code="job_not_found")


def jobs_query(*, project_id: int) -> Select[tuple[DiversityJob]]:
    return select(DiversityJob).where(DiversityJob.project_id == project_id)


def list_jobs(db: Session, *, project_id: int, limit: int = 50) -> list[DiversityJob]:
    return list(db.scalars(jobs_query(project_id=project_id)
                           .order_by(DiversityJob.id.desc()).limit(limit)))


def cancel_job(db: Session, job: DiversityJob) -> DiversityJob:
    if job.status in ("succeeded", "failed", "cancelled"):
        raise Conflict(f"job already {job.status}", code="bad_state")
    job.status, job.cancel_requested = "cancelled", True
    db.flush()
    return job


# -- genre–audience pairs ----------------------------------------------------------------------

def _text(value: Any, field_name: str) -> str:
    text = " ".join(str(value or "").split())
    if not text:
        raise _invalid(field_name, "must not be empty")
    if len(text) > 200:
        raise _invalid(field_name, "at most 200 characters")
    return text


def pairs_query(*, project_id: int, document_id: int | None = None) -> Select[tuple[GAPair]]:
    stmt = select(GAPair).where(GAPair.project_id == project_id)
    if document_id is not None:
        stmt = stmt.where(GAPair.document_id == document_id)
    return stmt


PAIR_ORDER = (GAPair.document_id, GAPair.position)  # then id


def list_pairs(db: Session, *, project_id: int, document_id: int | None = None) -> list[GAPair]:
    return list(db.scalars(pairs_query(project_id=project_id, document_id=document_id)
                           .order_by(*PAIR_ORDER, GAPair.id)))


def get_pair(db: Session, *, project_id: int, pair_id: int) -> GAPair:
    return get_in_project(db, GAPair, pair_id, project_id=project_id, what="genre–audience pair",
                          code="ga_pair_not_found")


def create_pair(db: Session, *, project_id: int, document_id: int, genre: str,
                audience: str) -> GAPair:
    get_in_project(db, Document, document_id, project_id=project_id,
                   what="document", code="document_not_found")
    have = list_pairs(db, project_id=project_id, document_id=document_id)
    if len(have) >= MAX_PAIRS:
        raise _invalid("body.document_id", f"a document has at most {MAX_PAIRS} pairs")
    pair = GAPair(project_id=project_id, document_id=document_id,
                  genre=_text(genre, "body.genre"), audience=_text(audience, "body.audience"),
                  position=len(have))
    db.add(pair)
    db.flush()
    return pair


def update_pair(db: Session, pair: GAPair, *, genre: str | None, audience: str | None) -> GAPair:
    if genre is not None:
        pair.genre = _text(genre, "body.genre")
    if audience is not None:
        pair.audience = _text(audience, "body.audience")
    db.flush()
    return pair


def delete_pair(db: Session, pair: GAPair) -> None:
    db.delete(pair)
    db.flush()
