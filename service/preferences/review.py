"""Pairwise review: the next item for an annotator, decisions, how decisions resolve an item,
a lead's adjudication, and agreement (Cohen's kappa) between annotators.

With the project's review overlap ``k`` (the same setting as single review), an item is
``pending`` until ``k`` annotators decided it; then ``decided`` when they agree (same outcome
and, for a preference, the same chosen candidate) or ``disputed`` when they do not, which puts
it in the lead's adjudication queue. A lead's decision makes it ``adjudicated`` and is final.
``next_item`` leases the item it hands out, so annotators sharing the queue get different pairs.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from itertools import combinations
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.db import utcnow
from service.core.errors import Conflict, Invalid
from service.models import (
    PreferenceCandidate,
    PreferenceDecision,
    PreferenceItem,
    PreferenceLease,
    Project,
    User,
)
from service.models.preference import ItemStatus, Outcome
from service.preferences import service as items_service
from service.review import agreement as review_agreement
from service.review import service as review_service


def _pair(db: Session, item: PreferenceItem, chosen_id: int | None, rejected_id: int | None,
          outcome: str) -> tuple[int, int]:
    """The two candidates compared, checked to belong to the item (display order fills in)."""
    cands = {c.id: c for c in items_service.candidates_of(db, item.id)}
    if len(cands) < 2:
        raise Conflict("the item has fewer than two candidates yet", code="item_incomplete")
    shown = [c.id for c in items_service.display_order(item.id, list(cands.values()))]
    if chosen_id is None:
        chosen_id = shown[0]
    if rejected_id is None:  # the other of the two shown
        rejected_id = next(c for c in shown[:3] if c != chosen_id)
    for field, cid in (("chosen_id", chosen_id), ("rejected_id", rejected_id)):
        if cid not in cands:
            raise Invalid("not a candidate of this item",
                          details=[{"field": f"body.{field}", "message": "unknown candidate"}])
    if chosen_id == rejected_id:
        raise Invalid("compare two different candidates",
                      details=[{"field": "body.rejected_id", "message": "same as chosen_id"}])
    return chosen_id, rejected_id


def _label(d: PreferenceDecision | PreferenceItem) -> str:
    """What agreement compares: which candidate won, or a tie, or both bad."""
    return f"{d.outcome}:{d.chosen_id}" if d.outcome == Outcome.preferred.value else str(d.outcome)


def decide(db: Session, *, project: Project, item: PreferenceItem, annotator_id: int, outcome: str,
           chosen_id: int | None = None, rejected_id: int | None = None,
           edited_text: str | None = None, reason: str | None = None) -> PreferenceItem:
    """Record (or replace) this annotator's decision and resolve the item from the decisions."""
    chosen_id, rejected_id = _pair(db, item, chosen_id, rejected_id, outcome)
    edited = edited_text if edited_text and edited_text.strip() else None
    if edited is not None:
        original = db.get(PreferenceCandidate, chosen_id)
        edited = None if original is not None and original.content == edited else edited
    row = db.scalar(select(PreferenceDecision).where(PreferenceDecision.item_id == item.id,
                                                     PreferenceDecision.annotator_id == annotator_id))
    if row is None:
        row = PreferenceDecision(project_id=item.project_id, item_id=item.id,
                                 annotator_id=annotator_id)
        db.add(row)
    row.outcome, row.chosen_id, row.rejected_id = outcome, chosen_id, rejected_id
    row.edited_text, row.reason = edited, (reason or None)
    row.created_at = utcnow()
    db.execute(delete(PreferenceLease).where(PreferenceLease.item_id == item.id,
                                             PreferenceLease.user_id == annotator_id))
    db.flush()
    _resolve(db, project, item)
    return item


def _resolve(db: Session, project: Project, item: PreferenceItem) -> None:
    if item.status == ItemStatus.adjudicated.value:
        return  # a lead's decision stands
    decisions = items_service.decisions_of(db, item.id)
    needed = review_service.review_settings(project).review_overlap
    if len(decisions) < needed:
        item.status = ItemStatus.pending.value
        item.outcome = item.chosen_id = item.rejected_id = item.chosen_text = None
    elif len({_label(d) for d in decisions}) == 1:
        last = decisions[-1]
        edits = [d.edited_text for d in decisions if d.edited_text]
        item.status = ItemStatus.decided.value
        item.outcome, item.chosen_id, item.rejected_id = last.outcome, last.chosen_id, last.rejected_id
        item.chosen_text = edits[-1] if edits else None
        item.resolved_by_id, item.resolved_at = last.annotator_id, utcnow()
    else:
        item.status = ItemStatus.disputed.value
        item.outcome = item.chosen_id = item.rejected_id = item.chosen_text = None
    db.flush()


def adjudicate(db: Session, *, item: PreferenceItem, lead_id: int, outcome: str,
               chosen_id: int | None = None, rejected_id: int | None = None,
               edited_text: str | None = None, reason: str | None = None) -> PreferenceItem:
    """The lead's final word on an item (disputed or not)."""
    chosen_id, rejected_id = _pair(db, item, chosen_id, rejected_id, outcome)
    original = db.get(PreferenceCandidate, chosen_id)
    edited = edited_text if edited_text and edited_text.strip() else None
    if edited is not None and original is not None and original.content == edited:
        edited = None
    item.status = ItemStatus.adjudicated.value
    item.outcome, item.chosen_id, item.rejected_id = outcome, chosen_id, rejected_id
    item.chosen_text = edited
    item.resolved_by_id, item.resolved_at = lead_id, utcnow()
    db.flush()
    return item


def next_item(db: Session, *, project_id: int, annotator_id: int,
              skip_ids: list[int] | None = None, lease_seconds: int | None = None
              ) -> PreferenceItem | None:
    """The oldest pending item with two or more candidates that this annotator has not decided,
    leased to them: annotators sharing the queue never get the same pair at once.

    As in single review (``review_service.next_sample``), the item handed out is reserved for
    ``lease_seconds`` (``review_lease_seconds``); an annotator holds one lease per project, so
    asking again returns the same item; items another annotator holds a live lease on are passed
    over, and on PostgreSQL rows being handed out right now are skipped (``FOR UPDATE SKIP
    LOCKED``). The lease is a conditional upsert, so two callers racing for one item cannot
    both win: the loser tries the next. Deciding drops the decider's lease.
    """
    now = utcnow()
    ttl = timedelta(seconds=lease_seconds or get_settings().review_lease_seconds)
    mine = select(PreferenceDecision.item_id).where(PreferenceDecision.annotator_id == annotator_id,
                                                    PreferenceDecision.project_id == project_id)
    ready = (select(PreferenceCandidate.item_id).group_by(PreferenceCandidate.item_id)
             .having(func.count() >= 2))
    held = exists().where(PreferenceLease.item_id == PreferenceItem.id,
                          PreferenceLease.user_id != annotator_id, PreferenceLease.expires_at > now)
    stmt = select(PreferenceItem).where(PreferenceItem.project_id == project_id,
                                        PreferenceItem.status == ItemStatus.pending.value,
                                        PreferenceItem.id.not_in(mine), PreferenceItem.id.in_(ready),
                                        ~held)
    if skip_ids:
        stmt = stmt.where(PreferenceItem.id.not_in(skip_ids))
    own = select(PreferenceLease.item_id).where(PreferenceLease.user_id == annotator_id,
                                                PreferenceLease.project_id == project_id,
                                                PreferenceLease.expires_at > now)
    lost: list[int] = []
    for _ in range(20):
        pick = stmt.where(PreferenceItem.id.not_in(lost)) if lost else stmt
        # the item this annotator already holds first, then the oldest
        pick = pick.order_by(PreferenceItem.id.in_(own).desc(), PreferenceItem.id).limit(1)
        found = db.scalars(pick.with_for_update(of=PreferenceItem, skip_locked=True)).first()
        if found is None or _take_lease(db, item=found, user_id=annotator_id, now=now, ttl=ttl):
            return found
        lost.append(found.id)
    return None


def _take_lease(db: Session, *, item: PreferenceItem, user_id: int, now: Any,
                ttl: timedelta) -> bool:
    """Lease ``item`` to ``user_id`` unless someone else holds a live lease on it, and drop the
    user's other leases in the project."""
    insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = insert(PreferenceLease).values(item_id=item.id, project_id=item.project_id,
                                            user_id=user_id, expires_at=now + ttl)
    upsert = values.on_conflict_do_update(
        index_elements=[PreferenceLease.item_id],
        set_={"user_id": values.excluded.user_id, "expires_at": values.excluded.expires_at},
        where=(PreferenceLease.expires_at <= now) | (PreferenceLease.user_id == user_id),
    ).returning(PreferenceLease.item_id)
    if db.execute(upsert).first() is None:
        return False
    db.execute(delete(PreferenceLease).where(PreferenceLease.user_id == user_id,
                                             PreferenceLease.project_id == item.project_id,
                                             PreferenceLease.item_id != item.id))
    return True


def disputed(db: Session, *, project_id: int, limit: int = 100) -> list[PreferenceItem]:
    return list(db.scalars(select(PreferenceItem).where(
        PreferenceItem.project_id == project_id,
        PreferenceItem.status == ItemStatus.disputed.value).order_by(PreferenceItem.id).limit(limit)))


def agreement(db: Session, *, project_id: int) -> dict[str, Any]:
    """Cohen's kappa between every two annotators over the items both decided, and overall over
    the first two decisions of every item decided more than once."""
    by_item: dict[int, list[PreferenceDecision]] = defaultdict(list)
    for d in db.scalars(select(PreferenceDecision).where(PreferenceDecision.project_id == project_id)
                        .order_by(PreferenceDecision.id)):
        by_item[d.item_id].append(d)
    overlapped = [ds for ds in by_item.values() if len(ds) >= 2]
    first_a = [_label(ds[0]) for ds in overlapped]
    first_b = [_label(ds[1]) for ds in overlapped]
    pair_labels: dict[tuple[int, int], tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for ds in overlapped:
        for x, y in combinations(sorted(ds, key=lambda d: d.annotator_id), 2):
            a, b = pair_labels[(x.annotator_id, y.annotator_id)]
            a.append(_label(x))
            b.append(_label(y))
    ids = {i for pair in pair_labels for i in pair}
    emails = dict(db.execute(select(User.id, User.email).where(User.id.in_(ids))).all()) if ids else {}
    pairs = []
    for (x, y), (a, b) in sorted(pair_labels.items()):
        observed = sum(1 for p, q in zip(a, b) if p == q) / len(a) if a else None
        pairs.append({"annotators": [x, y], "emails": [emails.get(x, str(x)), emails.get(y, str(y))],
                      "items": len(a), "kappa": _round(review_agreement.cohen_kappa(a, b)),
                      "observed": _round(observed)})
    n_disputed = db.scalar(select(func.count()).select_from(PreferenceItem).where(
        PreferenceItem.project_id == project_id,
        PreferenceItem.status == ItemStatus.disputed.value)) or 0
    return {"items_with_overlap": len(overlapped),
            "kappa": _round(review_agreement.cohen_kappa(first_a, first_b)),
            "pairs": pairs, "disputed": int(n_disputed), **judge_agreement(db, project_id)}


def judge_agreement(db: Session, project_id: int) -> dict[str, Any]:
    """How often an LLM judge's pre-ranking picked the answer people preferred, over the
    resolved pairs the judge ranked (a judge's tie counts as a miss)."""
    rows = db.execute(select(PreferenceItem.chosen_id, PreferenceItem.judge).where(
        PreferenceItem.project_id == project_id, PreferenceItem.judge.is_not(None),
        PreferenceItem.status.in_((ItemStatus.decided.value, ItemStatus.adjudicated.value)),
        PreferenceItem.outcome == Outcome.preferred.value)).all()
    ranked = [(chosen, judge) for chosen, judge in rows if isinstance(judge, dict)]
    hits = sum(1 for chosen, judge in ranked if judge.get("chosen_id") == chosen)
    return {"judge_items": len(ranked),
            "judge_agreement": _round(hits / len(ranked)) if ranked else None}


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
