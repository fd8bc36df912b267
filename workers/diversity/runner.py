"""The diversity runner: one ``DiversityJob`` under the job kit's lease (``workers/jobs.py``).

* ``tree``: the documents' headings and an even sample of chunks → the ``domain_tree`` prompt →
  a two- or three-level tree, written (and the job closed) in one fenced transaction;
* ``tag``: each selected sample and the numbered leaves → ``domain_tag`` → the sample's leaf;
  by default only untagged samples are selected, so a resumed job goes on where it stopped;
* ``ga``: per document, its opening chunks → ``ga_pairs`` → N (genre, audience) pairs; each
  document's pairs and its "done" mark (``result.documents_done``) share one transaction;
* ``distill``: a topic → ``topic_expand`` to a depth (each expansion kept in ``result``) → the
  topic tree added to the domain tree → per leaf ``topic_questions`` then ``topic_answer`` →
  samples with ``unit_key`` ``distill:j<job>:n<leaf>#<i>`` (unique per project, so a leaf
  never gets a second copy) marked ungrounded in their provenance.

Every write is fenced by the lease (:meth:`Lease.fence` / :meth:`Lease.guard`): a runner that
lost its job, or a job cancelled meanwhile, writes nothing.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from service.core.db import get_sessionmaker
from service.core.errors import Invalid
from service.diversity import tree
from service.diversity.jobs import DIVERSITY
from service.generation import llm, parsers
from service.generation import service as generation_service
from service.generation.ratelimit import provider_limiter
from service.models import (
    Chunk,
    DiversityJob,
    Document,
    GAPair,
    LLMProvider,
    PromptTemplate,
    Sample,
    SampleRevision,
)
from service.samples import store, validation
from workers import jobs as kit

log = logging.getLogger(__name__)
MAX_OUTLINE_LINES = 200
EXCERPT_CHARS = 500
PROGRESS_EVERY = 10  # tagged samples between two writes of a tag job's progress
STEP_ERRORS = (llm.LLMError, parsers.ParseFailure, Invalid, validation.SampleInvalid, KeyError,
               TypeError, ValueError)


@dataclass
class Ctx:
    lease: kit.Lease
    job_id: int
    project_id: int
    kind: str
    params: dict[str, Any]
    result: dict[str, Any]
    provider: LLMProvider
    templates: dict[str, PromptTemplate]
    limiter: Any
    # every request's cost, also of calls that failed (``llm.Usage``), kept in ``result.usage``
    usage: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # a tag job's threads


def run_job(job_id: int) -> dict[str, Any]:
    """Task body for ``diversity.run_job``."""
    return kit.drive(DIVERSITY, job_id, _body)


def _body(lease: kit.Lease) -> dict[str, Any]:
    with get_sessionmaker()() as db:
        job = db.get(DiversityJob, lease.row_id)
        provider = db.get(LLMProvider, job.provider_id)
        templates = {step: db.get(PromptTemplate, tid)
                     for step, tid in (job.params.get("templates") or {}).items()}
        values = {"job_id": job.id, "project_id": job.project_id, "kind": job.kind,
                  "params": dict(job.params or {}), "result": dict(job.result or {})}
        db.expunge_all()
    if provider is None or None in templates.values():
        raise RuntimeError("the job's provider or one of its templates was deleted")
    ctx = Ctx(lease=lease, provider=provider, templates=templates,
              limiter=provider_limiter(provider), **values)
    before = ctx.result.get("usage") or {}
    ctx.usage = {k: int(before.get(k, 0)) for k in llm.Usage().columns()}
    step = {"tree": _tree, "tag": _tag, "ga": _ga, "distill": _distill}[ctx.kind]
    try:
        return step(ctx)
    except (kit.LeaseLost, kit.Cancelled):
        raise
    except Exception:  # the job fails (``kit.drive``); what its calls cost still counts
        ctx.lease.update(result=_result(ctx))
        raise


def _ask(ctx: Ctx, step: str, variables: dict[str, Any]) -> Any:
    """Render step ``step``'s template, call the provider, parse; the parsed value."""
    ctx.lease.check()
    template = ctx.templates[step]
    prompt = generation_service.render_template(template, variables)
    parser = dict(template.parser or {"kind": "text"})
    kind = parser.pop("kind", "text")
    messages = [{"role": "user", "content": prompt}]
    sampling = ctx.params.get("sampling") or {}
    usage = llm.Usage()
    try:
        if ctx.provider.kind == "local":
            from workers.generation import local  # lazy: torch

            try:
                res = local.chat_parsed(ctx.provider.model, messages, kind, parser_options=parser,
                                        params=sampling, usage=usage, lang=template.lang,
                                        should_stop=lambda: ctx.lease.should_stop(max_age=0.5))
            except local.Stopped as exc:
                raise kit.LeaseLost(f"diversity job {ctx.job_id}") from exc
        else:
            res = llm.chat_parsed(generation_service.provider_settings(ctx.provider), messages,
                                  kind, parser_options=parser, params=sampling,
                                  limiter=ctx.limiter, max_repairs=2, lang=template.lang,
                                  usage=usage)
    finally:
        with ctx.lock:
            for key, value in usage.columns().items():
                ctx.usage[key] = ctx.usage.get(key, 0) + value
    return res.value


def _result(ctx: Ctx, **values: Any) -> dict[str, Any]:
    ctx.result = {**ctx.result, **values, "usage": dict(ctx.usage)}
    return ctx.result


def _finish(ctx: Ctx, db: Any, *, produced: int = 1, **values: Any) -> dict[str, Any]:
    """Close the job: ``failed`` when it produced nothing and recorded errors (the first one is
    the job's error), else ``succeeded`` (a partial run keeps its errors in ``result``)."""
    result = _result(ctx, **values)
    errors = result.get("errors") or []
    status = "failed" if errors and not produced else "succeeded"
    error = (f"{len(errors)} step(s) failed, nothing produced; first error: {errors[0]}"
             if status == "failed" else None)
    if not ctx.lease.finish(status, db, result=result, error=error):
        db.rollback()
        raise kit.LeaseLost(f"diversity job {ctx.job_id}")
    db.commit()
    return {"status": status, **{k: v for k, v in result.items() if k != "usage"}}


def _int(value: Any, default: int, lo: int, hi: int) -> int:
    try:
        return max(lo, min(hi, int(value)))
    except (TypeError, ValueError):
        return default


# -- tree ---------------------------------------------------------------------------------------

def _tree(ctx: Ctx) -> dict[str, Any]:
    with get_sessionmaker()() as db:
        rows = db.execute(select(Chunk.heading_path, Chunk.text, Document.filename)
                          .join(Document, Document.id == Chunk.document_id)
                          .where(Chunk.project_id == ctx.project_id, Document.status == "parsed")
                          .order_by(Chunk.document_id, Chunk.ordinal)).all()
    outline: list[str] = []
    seen: set[str] = set()
    for heading, _text, filename in rows:
        line = " › ".join([filename, *(heading or [])])
        if line not in seen and len(outline) < MAX_OUTLINE_LINES:
            seen.add(line)
            outline.append(line)
    want = _int(ctx.params.get("max_chunks"), 12, 1, 100)
    step = max(1, len(rows) // want)
    excerpts = [r.text[:EXCERPT_CHARS] for r in rows[::step][:want]]
    levels = _int(ctx.params.get("levels"), 2, 2, tree.MAX_DEPTH)
    value = _ask(ctx, "domain_tree", {"outline": "\n".join(outline),
                                      "excerpts": "\n---\n".join(excerpts), "levels": levels})
    spec = tree.normalize_spec(value, max_depth=levels)
    if not spec:
        raise RuntimeError("the model proposed an empty tree")
    with get_sessionmaker()() as db:
        leaves = tree.add_tree(db, project_id=ctx.project_id, spec=spec, replace=True)
        return _finish(ctx, db, nodes=tree._spec_size(spec), leaves=len(leaves))


# -- tag ----------------------------------------------------------------------------------------

def _last(messages: list[dict[str, str]], role: str) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == role), "")


def _tag(ctx: Ctx) -> dict[str, Any]:
    p = ctx.params
    with get_sessionmaker()() as db:
        leaves = tree.leaves(db, project_id=ctx.project_id)
        stmt = select(Sample.id).where(Sample.project_id == ctx.project_id)
        if p.get("sample_ids"):
            stmt = stmt.where(Sample.id.in_(p["sample_ids"]))
        else:
            stmt = stmt.where(Sample.status.in_(p.get("statuses")
                                                or ["pending", "accepted", "needs_changes"]))
        if p.get("only_untagged", True):
            stmt = stmt.where(Sample.domain_leaf_id.is_(None))
        ids = list(db.scalars(stmt.order_by(Sample.id)))
    numbered = "\n".join(f"{i}. {path}" for i, (_id, path) in enumerate(leaves, 1))
    state = {"tagged": int(ctx.result.get("tagged", 0)), "failed": int(ctx.result.get("failed", 0)),
             "errors": list(ctx.result.get("errors", []))}
    pending = iter(ids)

    def one(sid: int) -> None:
        with get_sessionmaker()() as db:
            messages = db.scalar(select(Sample.messages).where(Sample.id == sid))
        if messages is None:
            return
        try:
            value = _ask(ctx, "domain_tag", {"leaves": numbered, "question": _last(messages, "user"),
                                             "answer": _last(messages, "assistant")})
            number = int(value["leaf"] if isinstance(value, dict) else value)
            if not 1 <= number <= len(leaves):
                raise ValueError(f"leaf {number} is not one of 1..{len(leaves)}")
        except STEP_ERRORS as exc:
            with ctx.lock:
                state["failed"] += 1
                state["errors"] = (state["errors"] + [
                    f"sample {sid}: {getattr(exc, 'message', None) or exc}"])[-20:]
            return
        with get_sessionmaker()() as db:  # fenced: a lost or cancelled runner writes nothing
            db.execute(update(Sample).where(Sample.id == sid)
                       .values(domain_leaf_id=leaves[number - 1][0])
                       .execution_options(synchronize_session=False))
            ctx.lease.fence(db)
            db.commit()
        with ctx.lock:
            state["tagged"] += 1
            if state["tagged"] % PROGRESS_EVERY == 0:
                ctx.lease.update(result=_result(ctx, **state))

    def work() -> None:  # one thread: take the next sample until none is left or we must stop
        while not ctx.lease.should_stop():
            with ctx.lock:
                sid = next(pending, None)
            if sid is None:
                return
            one(sid)

    threads = 1 if ctx.provider.kind == "local" else max(1, ctx.provider.max_concurrency)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"tag{ctx.job_id}") as pool:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()
    ctx.lease.check()  # cancelled or lost while the last samples ran: not ours to close
    with get_sessionmaker()() as db:
        return _finish(ctx, db, produced=state["tagged"], **state)


# -- genre–audience pairs -------------------------------------------------------------------------

def _ga(ctx: Ctx) -> dict[str, Any]:
    n = _int(ctx.params.get("n"), 4, 1, 20)
    done: list[int] = list(ctx.result.get("documents_done", []))
    proposed, errors = int(ctx.result.get("pairs", 0)), list(ctx.result.get("errors", []))
    for doc_id in ctx.params.get("document_ids", []):
        if doc_id in done:
            continue
        with get_sessionmaker()() as db:
            doc = db.get(Document, doc_id)
            texts = list(db.scalars(select(Chunk.text).where(Chunk.document_id == doc_id)
                                    .order_by(Chunk.ordinal).limit(3)))
            title = doc.filename if doc else str(doc_id)
        try:
            value = _ask(ctx, "ga_pairs", {"title": title, "text": "\n\n".join(texts)[:3000],
                                           "n": n})
            pairs = _clean_pairs(value, n)
        except STEP_ERRORS as exc:
            errors = (errors + [f"document {doc_id}: {getattr(exc, 'message', None) or exc}"])[-20:]
            pairs = []
        with get_sessionmaker()() as db:
            if pairs and ctx.params.get("replace"):
                db.execute(GAPair.__table__.delete().where(GAPair.document_id == doc_id))
            start = db.scalar(select(func.count()).select_from(GAPair)
                              .where(GAPair.document_id == doc_id)) or 0
            db.add_all(GAPair(project_id=ctx.project_id, document_id=doc_id, genre=g, audience=a,
                              position=start + i) for i, (g, a) in enumerate(pairs))
            done.append(doc_id)
            proposed += len(pairs)
            ctx.lease.guard(db, result=_result(ctx, documents_done=done, pairs=proposed,
                                               errors=errors))
            db.commit()
    with get_sessionmaker()() as db:
        return _finish(ctx, db, produced=proposed, documents_done=done, pairs=proposed,
                       errors=errors)


def _clean_pairs(value: Any, n: int) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise parsers.ParseFailure("a JSON array of {genre, audience}", str(value))
    out: list[tuple[str, str]] = []
    for item in value:
        if not isinstance(item, dict):
            continue
        genre = " ".join(str(item.get("genre") or "").split())[:200]
        audience = " ".join(str(item.get("audience") or "").split())[:200]
        if genre and audience and (genre, audience) not in out:
            out.append((genre, audience))
    if not out:
        raise parsers.ParseFailure("no (genre, audience) pair in the answer", str(value))
    return out[:n]


# -- distillation ---------------------------------------------------------------------------------

def _distill(ctx: Ctx) -> dict[str, Any]:
    p = ctx.params
    topic = " ".join(str(p.get("topic") or "").split())
    if "leaves" not in ctx.result:
        if p.get("use_tree"):
            with get_sessionmaker()() as db:
                leaves = tree.leaves(db, project_id=ctx.project_id)
                ctx.lease.guard(db, result=_result(ctx, leaves=leaves))
                db.commit()
        else:
            _expand(ctx, topic)
    leaves = [(int(i), str(path)) for i, path in ctx.result["leaves"]]
    per_leaf = _int(p.get("questions_per_leaf"), 3, 1, 20)
    done: list[int] = list(ctx.result.get("leaves_done", []))
    samples, errors = int(ctx.result.get("samples", 0)), list(ctx.result.get("errors", []))
    for leaf_id, path in leaves:
        if leaf_id in done:
            continue
        try:
            questions = list(_ask(ctx, "topic_questions", {"topic": topic or path.split(" › ")[0],
                                                           "path": path, "n": per_leaf}))[:per_leaf]
            convs = []
            for q in questions:
                answer = _ask(ctx, "topic_answer", {"question": q, "path": path})
                convs.append(store.accept([{"role": "user", "content": q},
                                           {"role": "assistant", "content": str(answer)}]))
        except STEP_ERRORS as exc:
            errors = (errors + [f"{path}: {getattr(exc, 'message', None) or exc}"])[-20:]
            convs = []
        written = _write_distilled(ctx, leaf_id, path, topic, convs)
        samples += written
        done.append(leaf_id)
        with get_sessionmaker()() as db:
            ctx.lease.guard(db, result=_result(ctx, leaves_done=done, samples=samples,
                                               errors=errors))
            db.commit()
    with get_sessionmaker()() as db:
        return _finish(ctx, db, produced=samples, leaves_done=done, samples=samples,
                       errors=errors)


def _expand(ctx: Ctx, topic: str) -> None:
    """Sub-topics to ``params.depth`` (each expansion kept in ``result.expansions`` as it comes,
    so a resumed job asks none twice), then the topic tree added to the domain tree."""
    depth = _int(ctx.params.get("depth"), 2, 1, tree.MAX_DEPTH - 1)
    breadth = _int(ctx.params.get("breadth"), 3, 1, 10)
    expansions: dict[str, list[str]] = dict(ctx.result.get("expansions", {}))
    frontier: list[tuple[str, ...]] = [(topic,)]
    for _level in range(depth):
        nxt: list[tuple[str, ...]] = []
        for path in frontier:
            key = " › ".join(path)
            if key not in expansions:
                value = _ask(ctx, "topic_expand", {"topic": topic, "path": key, "n": breadth})
                names = []
                for raw in value:
                    name = " ".join(str(raw).split())[:tree.MAX_NAME]
                    if name and name.casefold() not in {x.casefold() for x in names}:
                        names.append(name)
                expansions[key] = names[:breadth]
                if not ctx.lease.update(result=_result(ctx, expansions=expansions)):
                    raise kit.LeaseLost(f"diversity job {ctx.job_id}")
            nxt.extend((*path, child) for child in expansions[key])
        frontier = nxt

    def spec(path: tuple[str, ...]) -> dict[str, Any]:
        kids = expansions.get(" › ".join(path), []) if len(path) <= depth else []
        return {"name": path[-1], "children": [spec((*path, k)) for k in kids]}

    with get_sessionmaker()() as db:
        leaves = tree.add_tree(db, project_id=ctx.project_id, spec=[spec((topic,))])
        ctx.lease.guard(db, result=_result(ctx, expansions=expansions, leaves=leaves))
        db.commit()


def _write_distilled(ctx: Ctx, leaf_id: int, path: str, topic: str,
                     convs: list[list[dict[str, str]]]) -> int:
    """The leaf's samples in one fenced transaction; 0 when they exist already."""
    if not convs:
        return 0
    prefix = f"distill:j{ctx.job_id}:n{leaf_id}"
    provider = ctx.provider
    templates = {step: {"id": t.id, "name": t.name, "version": t.version}
                 for step, t in ctx.templates.items()}
    with get_sessionmaker()() as db:
        try:
            rows = [Sample(project_id=ctx.project_id, messages=msgs, status="pending",
                           source="distillation", unit_key=f"{prefix}#{i}", domain_leaf_id=leaf_id,
                           provenance={"grounded": False, "distillation": {
                               "job_id": ctx.job_id, "topic": topic, "path": path,
                               "leaf_id": leaf_id, "templates": templates,
                               "template": ctx.templates["topic_questions"].name,
                               "provider_id": provider.id, "model": provider.model}},
                           tags=[], scores={}, version=1)
                    for i, msgs in enumerate(convs)]
            db.add_all(rows)
            db.flush()
            db.add_all(SampleRevision(sample_id=s.id, version=1, action="create",
                                      messages_before=None, messages_after=s.messages,
                                      status_before=None, status_after="pending", actor_id=None,
                                      comment=f"distilled by diversity job {ctx.job_id}")
                       for s in rows)
            ctx.lease.fence(db)
            db.commit()
        except IntegrityError:  # the leaf's samples exist already: never a second copy
            db.rollback()
            log.warning("distillation %s: samples exist already", prefix)
            return 0
        except kit.LeaseLost:
            db.rollback()
            raise
    return len(convs)
