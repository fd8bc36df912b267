"""Review domain functions: the next sample for an annotator, decisions (single or N-way
double review), adjudication, assignment, agreement, throughput and progress.

Services flush; the caller (request dependency or task) commits. Every write to a sample goes
through ``samples_service.update_sample`` (optimistic locking, revision trail)."""
from __future__ import annotations

import functools
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    and_,
    bindparam,
    delete,
    exists,
    func,
    not_,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.core import leases
from service.core.config import get_settings
from service.core.db import UTCDateTime, utcnow
from service.core.errors import Conflict, Forbidden, Invalid
from service.models import (
    Membership,
    Project,
    ReviewDecision,
    ReviewLease,
    Role,
    Sample,
    User,
)
from service.review import agreement as agreement_mod
from service.review import bulk as review_bulk
from service.samples import service as samples_service

DECISIONS = ("accepted", "rejected", "needs_changes")
ADJUDICATION_TAG = "needs-adjudication"
DEFAULT_REJECT_REASONS = ["factually wrong", "not supported by the source", "off-topic",
                          "unsafe or private data", "poor language", "duplicate"]
SKIP_KEEP = 100  # skipped ids remembered per browser session and project


# -- settings ------------------------------------------------------------------------------------

@dataclass
class ReviewSettings:
    reject_reasons: list[str] = field(default_factory=lambda: list(DEFAULT_REJECT_REASONS))
    target_accepted: int | None = None
    review_overlap: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {"reject_reasons": self.reject_reasons, "target_accepted": self.target_accepted,
                "review_overlap": self.review_overlap}


def review_settings(project: Project) -> ReviewSettings:
    raw = project.settings or {}
    reasons = raw.get("reject_reasons")
    out = ReviewSettings()
    if isinstance(reasons, list) and all(isinstance(r, str) for r in reasons):
        out.reject_reasons = [r for r in reasons if r.strip()]
    target = raw.get("target_accepted")
    if isinstance(target, int) and target > 0:
        out.target_accepted = target
    overlap = raw.get("review_overlap")
    if isinstance(overlap, int) and overlap >= 1:
        out.review_overlap = overlap
    return out


def update_review_settings(db: Session, project: Project, *, reject_reasons: list[str] | None = None,
                           target_accepted: int | None = None, clear_target: bool = False,
                           review_overlap: int | None = None) -> ReviewSettings:
    settings = dict(project.settings or {})  # a new dict, so the JSON column is seen as changed
    if reject_reasons is not None:
        cleaned = [r.strip()[:200] for r in reject_reasons if r and r.strip()]
        settings["reject_reasons"] = list(dict.fromkeys(cleaned))[:50]
    if clear_target:
        settings.pop("target_accepted", None)
    elif target_accepted is not None:
        if target_accepted < 1:
            raise Invalid("target_accepted must be positive",
                          details=[{"field": "body.target_accepted", "message": ">= 1"}])
        settings["target_accepted"] = target_accepted
    if review_overlap is not None:
        if not 1 <= review_overlap <= 10:
            raise Invalid("review_overlap must be between 1 and 10",
                          details=[{"field": "body.review_overlap", "message": "1..10"}])
        settings["review_overlap"] = review_overlap
    project.settings = settings
    db.flush()
    return review_settings(project)


# -- the queue -----------------------------------------------------------------------------------

def parse_skip(raw: str | None) -> list[int]:
    out: list[int] = []
    for part in (raw or "").split("."):
        if part.isdigit() and len(part) < 19:
            out.append(int(part))
    return out[-SKIP_KEEP:]


def format_skip(ids: list[int]) -> str:
    return ".".join(str(i) for i in list(dict.fromkeys(ids))[-SKIP_KEEP:])


def _queue_clauses(db: Session, *, project_id: int, user_id: int, overlap: int) -> list[Any]:
    out: list[Any] = [Sample.project_id == project_id, Sample.status == "pending"]
    if overlap > 1:
        out.append(~exists().where(ReviewDecision.sample_id == Sample.id,
                                   ReviewDecision.reviewer_id == user_id))
        out.append(not_(samples_service.has_tag(db, ADJUDICATION_TAG)))
    return out


def next_sample(db: Session, *, project_id: int, user_id: int, overlap: int = 1,
                skip_ids: list[int] | None = None, exclude_ids: list[int] | None = None,
                sort: str | None = None, lease_seconds: int | None = None) -> Sample | None:
    """The next pending sample for ``user_id``: assigned to them first, then unassigned.

    Within each group samples come in ``sort`` order (``id`` by default; see
    ``samples_service.SORTS``). Skipped samples are passed over while anything else is left;
    then they come back. ``exclude_ids`` are never returned (e.g. the sample just skipped).
    No counting.

    Single review shares the queue through leases: the sample handed out is reserved for
    ``lease_seconds`` (``review_lease_seconds``; an annotator holds one lease per project, so asking
    again moves it), samples another annotator holds a live lease on are passed over, and on PostgreSQL rows being handed to someone else right now are skipped
    (``FOR UPDATE SKIP LOCKED``). The lease is taken with a conditional upsert, so two callers
    racing for one sample (SQLite, or a stale read) cannot both get it: the loser tries the next.
    """
    if overlap > 1:  # double review: every reviewer sees every sample; no leases
        return _pick(db, project_id=project_id, user_id=user_id, overlap=overlap,
                     skip_ids=skip_ids, exclude_ids=exclude_ids, sort=sort, now=None)
    ttl = timedelta(seconds=lease_seconds or get_settings().review_lease_seconds)
    now = utcnow()
    lost: list[int] = []
    if db.get_bind().dialect.name == "postgresql":
        return _claim_pg(db, project_id=project_id, user_id=user_id, skip_ids=skip_ids,
                         exclude_ids=exclude_ids, sort=sort, now=now, ttl=ttl)
    for _ in range(20):
        found = _pick(db, project_id=project_id, user_id=user_id, overlap=overlap,
                      skip_ids=skip_ids, exclude_ids=[*(exclude_ids or []), *lost], sort=sort,
                      now=now)
        if found is None or _take_lease(db, sample=found, user_id=user_id, now=now, ttl=ttl):
            return found
        lost.append(found.id)
    return None


def _attempts(skip_ids: list[int] | None, exclude_ids: list[int] | None) -> list[list[int]]:
    """The ids to pass over, first try then second: skipped and excluded, then only excluded."""
    skip = list(dict.fromkeys((skip_ids or []) + (exclude_ids or [])))
    return [skip, list(exclude_ids or [])] if skip else [[]]


def _leased_clauses(db: Session, *, project_id: int, user_id: int, now: Any) -> list[Any]:
    """Pending samples of the project that nobody else holds a live lease on."""
    return [*_queue_clauses(db, project_id=project_id, user_id=user_id, overlap=1),
            ~exists().where(ReviewLease.sample_id == Sample.id, ReviewLease.user_id != user_id,
                            ReviewLease.expires_at > now)]


def _claim_pg(db: Session, *, project_id: int, user_id: int, skip_ids: list[int] | None,
              exclude_ids: list[int] | None, sort: str | None, now: Any,
              ttl: timedelta) -> Sample | None:
    """``next_sample`` with leases on PostgreSQL: each try is ONE statement that picks the
    first sample assigned to the user, else the first unassigned one (``FOR UPDATE SKIP
    LOCKED``: rows another claim is taking right now are passed over), takes the lease with the
    same conditional upsert as :func:`leases.take`, drops the user's other leases in the project
    and returns the sample. A lost race (the lease went to someone else between their commit
    and our read) tries the next one."""
    sort = samples_service.check_sort(sort)
    params = {"project_id": project_id, "user_id": user_id, "now": now, "expires_at": now + ttl}
    lost: list[int] = []
    for _ in range(20):
        for avoid in _attempts(skip_ids, [*(exclude_ids or []), *lost]):
            row = db.execute(_claim_statement(sort, bool(avoid)),
                             {**params, "avoid": avoid} if avoid else params).first()
            picked, sample = (row[1], row[0]) if row is not None else (None, None)
            if sample is not None:
                return sample
            if picked is not None:  # leased to someone else meanwhile: the next one
                lost.append(picked)
                break
        else:
            return None
    return None


@functools.lru_cache(maxsize=64)
def _claim_statement(sort: str, avoid: bool) -> Any:
    """The claim, one round trip (see :func:`_claim_pg`): built once per sort and shape, its
    values bound at execution (``project_id``, ``user_id``, ``now``, ``expires_at`` and, with
    ``avoid``, the ids to pass over); it returns (the sample when its lease is ours, the id
    picked)."""
    project_id = bindparam("project_id", type_=BigInteger)
    user_id = bindparam("user_id", type_=BigInteger)
    now = bindparam("now", type_=UTCDateTime)
    expires_at = bindparam("expires_at", type_=UTCDateTime)
    key, desc = samples_service.SORTS[sort]
    order = samples_service.sort_order(sort)
    base = [Sample.project_id == project_id,
            ~exists().where(ReviewLease.sample_id == Sample.id, ReviewLease.user_id != user_id,
                            ReviewLease.expires_at > now)]
    if key == "id":
        # With ``status = 'pending'`` PostgreSQL drops status from the ORDER BY (a constant),
        # sees the primary key giving id order as well and takes it, expecting a pending row
        # every second step (the table's share). But the decided samples are the queue's head:
        # it stepped over each of them, 10k rows (10-15 ms) after 10k decisions and more with
        # every decision. As a range, with status in the ORDER BY, only the (project_id,
        # status, id) index gives that order; its entries of decided samples are dead, skipped
        # once marked, and the claim stays at ~0.2 ms.
        base += [Sample.status >= "pending", Sample.status <= "pending"]
        order = [Sample.status.desc() if desc else Sample.status.asc(), *order]
    else:
        base.append(Sample.status == "pending")
    if avoid:
        base.append(Sample.id.not_in(bindparam("avoid", expanding=True)))

    def first(who: Any) -> Any:
        return (select(Sample.id).where(*base, who).order_by(*order).limit(1)
                .with_for_update(of=Sample, skip_locked=True))

    mine = first(Sample.assignee_id == user_id).cte("mine")
    anyone = first(Sample.assignee_id.is_(None)).cte("anyone")
    cand = union_all(select(mine.c.id),
                     select(anyone.c.id).where(~exists(select(mine.c.id)))).cte("cand")
    insert = pg_insert(ReviewLease).from_select(
        ["sample_id", "project_id", "user_id", "expires_at"],
        select(cand.c.id, project_id, user_id, expires_at).limit(1))
    taken = insert.on_conflict_do_update(
        index_elements=[ReviewLease.sample_id],
        set_={"user_id": insert.excluded.user_id, "expires_at": insert.excluded.expires_at},
        where=(ReviewLease.expires_at <= now) | (ReviewLease.user_id == user_id),
    ).returning(ReviewLease.sample_id).cte("taken")
    dropped = delete(ReviewLease).where(
        ReviewLease.user_id == user_id, ReviewLease.project_id == project_id,
        ReviewLease.sample_id.not_in(select(taken.c.sample_id)),
        exists(select(taken.c.sample_id))).cte("dropped")
    return (select(Sample, cand.c.id).select_from(cand)
            .outerjoin(taken, taken.c.sample_id == cand.c.id)
            .outerjoin(Sample, Sample.id == taken.c.sample_id)
            .add_cte(dropped))


def _pick(db: Session, *, project_id: int, user_id: int, overlap: int, skip_ids: list[int] | None,
          exclude_ids: list[int] | None, sort: str | None, now: Any) -> Sample | None:
    order = samples_service.sort_order(samples_service.check_sort(sort))
    if now is not None:
        base = _leased_clauses(db, project_id=project_id, user_id=user_id, now=now)
    else:
        base = _queue_clauses(db, project_id=project_id, user_id=user_id, overlap=overlap)
    for avoid in _attempts(skip_ids, exclude_ids):
        for who in (Sample.assignee_id == user_id, Sample.assignee_id.is_(None)):
            stmt = select(Sample).where(and_(*base), who)
            if avoid:
                stmt = stmt.where(Sample.id.not_in(avoid))
            stmt = stmt.order_by(*order).limit(1)
            if now is not None:
                stmt = stmt.with_for_update(of=Sample, skip_locked=True)
            found = db.scalar(stmt)
            if found is not None:
                return found
    return None


def _take_lease(db: Session, *, sample: Sample, user_id: int, now: Any, ttl: timedelta) -> bool:
    """Lease ``sample`` to ``user_id`` unless someone else holds a live lease on it."""
    return leases.take(db, ReviewLease, "sample_id", item_id=sample.id,
                       project_id=sample.project_id, user_id=user_id, now=now, ttl=ttl)


def release_lease(db: Session, *, sample_id: int, user_id: int | None = None) -> None:
    """Drop the lease on a sample (decided: anyone's; skipped: the skipper's)."""
    stmt = delete(ReviewLease).where(ReviewLease.sample_id == sample_id)
    if user_id is not None:
        stmt = stmt.where(ReviewLease.user_id == user_id)
    db.execute(stmt)


# -- decisions -----------------------------------------------------------------------------------

def _conflict(db: Session, sample_id: int, message: str) -> Conflict:
    db.expire_all()
    current = db.get(Sample, sample_id)
    return Conflict(message, code="version_conflict",
                    extra={"current": samples_service.sample_to_dict(current)})


def _record(db: Session, *, sample: Sample, reviewer_id: int, decision: str, reason: str | None,
            messages: list[dict[str, str]], version: int, release: bool = False) -> None:
    """Store (or replace) the reviewer's decision on the sample: one upsert. ``release``: drop
    the sample's lease too (in the same statement on PostgreSQL)."""
    postgresql = db.get_bind().dialect.name == "postgresql"
    stmt = (pg_insert if postgresql else sqlite_insert)(ReviewDecision).values(
        project_id=sample.project_id, sample_id=sample.id, reviewer_id=reviewer_id,
        decision=decision, reason=reason, messages=messages, sample_version=version,
        created_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=[ReviewDecision.sample_id, ReviewDecision.reviewer_id],
        set_={k: stmt.excluded[k] for k in ("decision", "reason", "messages", "sample_version",
                                            "created_at")})
    lease = delete(ReviewLease).where(ReviewLease.sample_id == sample.id)
    if release and postgresql:
        stmt = stmt.add_cte(lease.cte("released"))
    db.execute(stmt)
    if release and not postgresql:
        db.execute(lease)


def _check_decision(decision: str) -> str:
    if decision not in DECISIONS:
        raise Invalid(f"unknown decision {decision!r}",
                      details=[{"field": "body.decision", "message": f"one of {list(DECISIONS)}"}])
    return decision


def decide(db: Session, *, project: Project, sample_id: int, reviewer_id: int, decision: str,
           expected_version: int, reason: str | None = None,
           messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One reviewer's decision, optionally with their edited messages.

    Single review (overlap 1): edit + status in one compare-and-set; a stale version is a 409.
    Double review (overlap N): the decision is stored on its own; when N decisions exist the
    sample is resolved if they all agree (same label, same edited messages), else it is tagged
    for adjudication by a lead. Nothing is ever overwritten silently.
    """
    _check_decision(decision)
    if decision == "rejected" and not (reason or "").strip():
        raise Invalid("a rejection needs a reason", details=[{"field": "body.reason", "message": "required"}])
    overlap = review_settings(project).review_overlap
    msgs = (samples_service.check_messages(messages, "body.messages")
            if messages is not None else None)
    if overlap <= 1:
        sample = samples_service.get_sample(db, project_id=project.id, sample_id=sample_id)
        changed = msgs if msgs is not None and msgs != sample.messages else None
        tags = None
        if ADJUDICATION_TAG in (sample.tags or []):
            tags = [t for t in sample.tags if t != ADJUDICATION_TAG]
        sample = samples_service.update_sample(
            db, project_id=project.id, sample_id=sample_id, expected_version=expected_version,
            actor_id=reviewer_id, messages=changed, status=decision, tags=tags,
            reject_reason=reason if decision == "rejected" else None, comment=reason)
        _record(db, sample=sample, reviewer_id=reviewer_id, decision=decision, reason=reason,
                messages=sample.messages, version=sample.version, release=True)
        return {"sample": sample, "resolved": True, "flagged": False, "decisions": 1}

    # double review: serialise the deciders of one sample (row lock; SQLite serialises anyway)
    sample = db.scalar(select(Sample).where(Sample.id == sample_id, Sample.project_id == project.id)
                       .with_for_update())
    if sample is None:
        samples_service.get_sample(db, project_id=project.id, sample_id=sample_id)  # raises 404
    if sample.version != expected_version:
        raise _conflict(db, sample_id, "the sample was changed by someone else; reload and merge")
    if sample.status != "pending":
        raise _conflict(db, sample_id, "the sample has already been resolved")
    _record(db, sample=sample, reviewer_id=reviewer_id, decision=decision, reason=reason,
            messages=msgs if msgs is not None else sample.messages, version=sample.version)
    rows = list(db.scalars(select(ReviewDecision).where(ReviewDecision.sample_id == sample_id)
                           .order_by(ReviewDecision.id)))
    result: dict[str, Any] = {"resolved": False, "flagged": False, "decisions": len(rows)}
    if len(rows) >= overlap:
        labels = {r.decision for r in rows}
        answers = {orjson.dumps(r.messages).decode() for r in rows}
        if len(labels) == 1 and len(answers) == 1:
            final = rows[0].messages
            reasons = "; ".join(dict.fromkeys(r.reason for r in rows if r.reason)) or None
            sample = samples_service.update_sample(
                db, project_id=project.id, sample_id=sample_id, expected_version=sample.version,
                actor_id=reviewer_id, messages=final if final != sample.messages else None,
                status=decision, reject_reason=reasons if decision == "rejected" else None,
                comment=f"{len(rows)} reviewers agree" + (f": {reasons}" if reasons else ""))
            result["resolved"] = True
        elif ADJUDICATION_TAG not in (sample.tags or []):
            sample = samples_service.update_sample(
                db, project_id=project.id, sample_id=sample_id, expected_version=sample.version,
                actor_id=reviewer_id, tags=[*(sample.tags or []), ADJUDICATION_TAG],
                comment="reviewers disagree: flagged for adjudication")
            result["flagged"] = True
    result["sample"] = sample
    return result


def adjudicate(db: Session, *, project_id: int, sample_id: int, actor_id: int, decision: str,
               expected_version: int, reason: str | None = None,
               messages: list[dict[str, Any]] | None = None) -> Sample:
    """A lead's final word on a sample the reviewers disagreed on."""
    _check_decision(decision)
    sample = samples_service.get_sample(db, project_id=project_id, sample_id=sample_id)
    msgs = (samples_service.check_messages(messages, "body.messages")
            if messages is not None else None)
    return samples_service.update_sample(
        db, project_id=project_id, sample_id=sample_id, expected_version=expected_version,
        actor_id=actor_id, messages=msgs if msgs is not None and msgs != sample.messages else None,
        status=decision, tags=[t for t in (sample.tags or []) if t != ADJUDICATION_TAG],
        reject_reason=reason if decision == "rejected" else None,
        comment="adjudicated" + (f": {reason}" if reason else ""))


def decisions_for(db: Session, *, project_id: int, sample_id: int) -> list[ReviewDecision]:
    samples_service.get_sample(db, project_id=project_id, sample_id=sample_id)
    return list(db.scalars(select(ReviewDecision).where(ReviewDecision.sample_id == sample_id)
                           .order_by(ReviewDecision.id)))


def flagged(db: Session, *, project_id: int, limit: int, cursor: str | None,
            sort: str | None = None) -> tuple[list[Sample], str | None]:
    flt = samples_service.SampleFilter(status=["pending"], tag=ADJUDICATION_TAG)
    return samples_service.list_samples(db, project_id=project_id, flt=flt, limit=limit,
                                        cursor=cursor, sort=sort)


# -- assignment ----------------------------------------------------------------------------------

def reviewers(db: Session, *, project_id: int) -> list[tuple[User, str]]:
    """Members who can review (annotator and up), with their role."""
    rows = db.execute(select(User, Membership.role).join(Membership, Membership.user_id == User.id)
                      .where(Membership.project_id == project_id).order_by(User.email)).all()
    return [(u, role) for u, role in rows if Role(role).at_least(Role.annotator)]


def check_assignees(db: Session, *, project_id: int, user_ids: list[int],
                    field: str = "body.annotator_ids") -> None:
    """Samples are assigned only to members who can review (annotator and up): 422 otherwise."""
    allowed = {u.id for u, _ in reviewers(db, project_id=project_id)}
    strangers = [i for i in dict.fromkeys(user_ids) if i not in allowed]
    if strangers:
        raise Invalid(f"not annotators of this project: {strangers[:20]}",
                      details=[{"field": field, "message": "members with role annotator or higher"}])


def check_decider(sample: Sample, access: Any) -> None:
    """A sample assigned to someone is decided by that annotator; a lead (or higher) may
    override. Unassigned samples are anyone's (of annotator and up)."""
    if sample.assignee_id is None or sample.assignee_id == access.user.id:
        return
    if access.at_least(Role.lead):
        return
    raise Forbidden("this sample is assigned to another annotator", code="assigned_to_other")


def assign(db: Session, *, project_id: int, actor_id: int, flt: samples_service.SampleFilter,
           annotator_ids: list[int], mode: str = "round_robin", count: int | None = None,
           dry_run: bool = False, batch: int = 1000) -> dict[str, Any]:
    """Assign the samples matching ``flt`` to annotators.

    ``round_robin``: every matching sample (or the first ``count`` per annotator when given),
    dealt in id order like cards. ``count``: each annotator gets the next ``count`` samples
    as one contiguous block. ``dry_run`` only says how many each would get. More than
    ``review_bulk.TASK_THRESHOLD`` samples: a background job (the result has ``job_id``).
    """
    if mode not in ("round_robin", "count"):
        raise Invalid("mode must be round_robin or count", details=[{"field": "body.mode", "message": "round_robin|count"}])
    ids = list(dict.fromkeys(annotator_ids))
    if not ids:
        raise Invalid("choose at least one annotator", details=[{"field": "body.annotator_ids", "message": "required"}])
    check_assignees(db, project_id=project_id, user_ids=ids)
    if mode == "count" and not count:
        raise Invalid("count is required in count mode", details=[{"field": "body.count", "message": ">= 1"}])
    cap = count * len(ids) if count else None
    clauses = flt.clauses(db, project_id)
    if not dry_run:
        matching = samples_service.count_samples(db, project_id=project_id, flt=flt)
        selected = min(matching, cap) if cap else matching
        if selected > review_bulk.TASK_THRESHOLD:  # too many for one request: a task, 202
            return review_bulk.start_assign(db, project_id=project_id, actor_id=actor_id, flt=flt,
                                            annotator_ids=ids, mode=mode, count=count,
                                            matching=selected)
    stmt = select(Sample.id).where(and_(*clauses)).order_by(Sample.id)
    if cap:
        stmt = stmt.limit(cap)
    sample_ids = list(db.scalars(stmt))
    plan: dict[int, list[int]] = {i: [] for i in ids}
    spec = {"annotator_ids": ids, "mode": mode, "count": count}  # as the background job deals
    for position, sid in enumerate(sample_ids):
        annotator = review_bulk.assignee_at(position, spec)
        if annotator is None:
            break
        plan[annotator].append(sid)
    per = {str(a): len(v) for a, v in plan.items()}
    if dry_run:
        return {"matching": len(sample_ids), "per_annotator": per, "changed": 0, "dry_run": True}
    changed = 0
    for annotator, chunk_ids in plan.items():
        for start in range(0, len(chunk_ids), batch):
            part = samples_service.SampleFilter(ids=chunk_ids[start:start + batch])
            changed += samples_service.bulk_update(db, project_id=project_id, flt=part,
                                                   actor_id=actor_id, assignee_id=annotator)["changed"]
    return {"matching": len(sample_ids), "per_annotator": per, "changed": changed, "dry_run": False}


# -- agreement, throughput, progress -------------------------------------------------------------

def agreement(db: Session, *, project_id: int, max_decisions: int = 50_000,
              max_edit_pairs: int = 2_000) -> dict[str, Any]:
    """Cohen's kappa per reviewer pair, Fleiss' kappa over items with the usual number of raters,
    and the mean normalised edit distance between the answers each pair left.

    Looks at the most recent ``max_decisions`` decisions, so it stays bounded on big projects.
    """
    rows = db.execute(select(ReviewDecision.sample_id, ReviewDecision.reviewer_id,
                             ReviewDecision.decision, ReviewDecision.messages)
                      .where(ReviewDecision.project_id == project_id)
                      .order_by(ReviewDecision.id.desc()).limit(max_decisions)).all()
    by_sample: dict[int, dict[int, tuple[str, Any]]] = defaultdict(dict)
    for sid, rid, label, msgs in rows:
        by_sample[sid][rid] = (label, msgs)
    multi = {sid: d for sid, d in by_sample.items() if len(d) >= 2}
    pair_labels: dict[tuple[int, int], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    pair_edits: dict[tuple[int, int], list[float]] = defaultdict(list)
    for d in multi.values():
        for r1, r2 in itertools.combinations(sorted(d), 2):
            a, b = pair_labels[(r1, r2)]
            a.append(d[r1][0])
            b.append(d[r2][0])
            if len(pair_edits[(r1, r2)]) < max_edit_pairs:
                pair_edits[(r1, r2)].append(agreement_mod.edit_distance_ratio(
                    agreement_mod.answer_text(d[r1][1]), agreement_mod.answer_text(d[r2][1])))
    emails = _emails(db, {r for d in multi.values() for r in d})
    pairs = []
    per_reviewer: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for (r1, r2), (a, b) in sorted(pair_labels.items()):
        kappa = agreement_mod.cohen_kappa(a, b)
        edits = pair_edits[(r1, r2)]
        agree = sum(1 for x, y in zip(a, b) if x == y) / len(a)
        pairs.append({"a": r1, "b": r2, "a_email": emails.get(r1), "b_email": emails.get(r2),
                      "items": len(a), "agreement": agree, "cohen_kappa": kappa,
                      "edit_distance": sum(edits) / len(edits) if edits else None})
        for r in (r1, r2):
            per_reviewer[r].append((agree, len(a)))
    fleiss = None
    raters = None
    if multi:
        raters = Counter(len(d) for d in multi.values()).most_common(1)[0][0]
        ratings = [[v[0] for v in d.values()] for d in multi.values() if len(d) == raters]
        fleiss = agreement_mod.fleiss_kappa(agreement_mod.fleiss_table(ratings, DECISIONS))
    reviewers_out = [{"reviewer_id": r, "email": emails.get(r),
                      "agreement": sum(x * n for x, n in v) / sum(n for _, n in v),
                      "items": sum(n for _, n in v)} for r, v in sorted(per_reviewer.items())]
    return {"items": len(multi), "raters": raters, "fleiss_kappa": fleiss, "pairs": pairs,
            "reviewers": reviewers_out}


def _emails(db: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(db.execute(select(User.id, User.email).where(User.id.in_(ids))).all())


def throughput(db: Session, *, project_id: int, days: int = 14) -> dict[str, Any]:
    """Decisions per reviewer per day over the last ``days`` days."""
    since = utcnow() - timedelta(days=days)
    day = func.date(ReviewDecision.created_at)
    rows = db.execute(select(ReviewDecision.reviewer_id, day, func.count())
                      .where(ReviewDecision.project_id == project_id, ReviewDecision.created_at >= since)
                      .group_by(ReviewDecision.reviewer_id, day)).all()
    emails = _emails(db, {r for r, _, _ in rows})
    per: dict[int, dict[str, int]] = defaultdict(dict)
    for rid, d, n in rows:
        per[rid][str(d)] = n
    all_days = sorted({d for v in per.values() for d in v})
    out = [{"reviewer_id": rid, "email": emails.get(rid), "per_day": v, "total": sum(v.values()),
            "per_active_day": sum(v.values()) / len(v)} for rid, v in sorted(per.items())]
    return {"days": all_days, "reviewers": out}


def progress(db: Session, *, project: Project) -> dict[str, Any]:
    counts = samples_service.status_counts(db, project_id=project.id)
    target = review_settings(project).target_accepted
    accepted = counts.get("accepted", 0)
    return {"counts": counts, "total": sum(counts.values()), "target_accepted": target,
            "accepted": accepted,
            "percent": min(100.0, 100.0 * accepted / target) if target else None}


def project_stats(db: Session, project_id: int) -> list[tuple[str, Any]]:
    """Numbers for the project dashboard (registered in PROJECT_STATS)."""
    project = db.get(Project, project_id)
    p = progress(db, project=project)
    out: list[tuple[str, Any]] = [(f"samples {k.replace('_', ' ')}", v) for k, v in p["counts"].items()]
    if p["target_accepted"]:
        out.append(("accepted of target", f"{p['accepted']} / {p['target_accepted']} ({p['percent']:.0f}%)"))
    return out
