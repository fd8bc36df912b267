"""Preference versions: a frozen, split, seeded selection of resolved items.

The build (``preferences.build_version``, run by ``workers/preferences/runner.py``) takes every
item that is ``decided`` or ``adjudicated`` with a preference (and, unless the filter says no,
the ones where both candidates were bad: KTO's undesirable examples); ties are counted and left
out. The split is ``datasets.service.assign_splits`` over the item ids: the same pure function of
ids, seed and ratios as SFT versions, so it is the same on PostgreSQL and SQLite. Each item's
prompt, chosen text (the edited one when there is one) and rejected texts are copied into
``PreferenceVersionItem`` rows as canonical JSON; the version never changes afterwards.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.db import utcnow
from service.core.errors import Conflict, NotFound
from service.core.lookup import get_in_project
from service.core.pagination import paginate
from service.datasets import service as datasets_service
from service.datasets.schemas import SPLITS
from service.models import (
    PreferenceCandidate,
    PreferenceDecision,
    PreferenceItem,
    PreferenceVersion,
    PreferenceVersionItem,
)
from service.models.preference import ItemStatus, Outcome
from service.preferences.jobs import BUILD

BATCH = 2000
RESOLVED = (ItemStatus.decided.value, ItemStatus.adjudicated.value)


def create_version(db: Session, *, project_id: int, name: str, split: dict[str, float], seed: int,
                   include_both_bad: bool, actor_id: int | None) -> PreferenceVersion:
    last = db.scalar(select(func.max(PreferenceVersion.number))
                     .where(PreferenceVersion.project_id == project_id)) or 0
    version = PreferenceVersion(project_id=project_id, number=last + 1, name=name.strip(),
                                filter={"include_both_bad": include_both_bad}, split=dict(split),
                                seed=seed, counts={}, stats={}, status="queued",
                                created_by_id=actor_id)
    db.add(version)
    db.flush()
    jobs.enqueue(db, BUILD, version)
    return version


def get_version(db: Session, *, project_id: int, version_id: int) -> PreferenceVersion:
    return get_in_project(db, PreferenceVersion, version_id, project_id=project_id, what="preference version",
                          code="version_not_found")


def list_versions(db: Session, *, project_id: int, limit: int, cursor: str | None
                  ) -> tuple[list[PreferenceVersion], str | None]:
    stmt = select(PreferenceVersion).where(PreferenceVersion.project_id == project_id)
    return paginate(db, stmt, PreferenceVersion.id, limit=limit, cursor=cursor, descending=True)


def build_version(db: Session, version_id: int) -> PreferenceVersion:
    version = db.get(PreferenceVersion, version_id)
    if version is None:
        raise NotFound("preference version not found", code="version_not_found")
    if version.status == "ready":
        raise Conflict("the version is built already", code="version_ready")
    db.execute(PreferenceVersionItem.__table__.delete().where(
        PreferenceVersionItem.version_id == version.id))  # a retried build starts from scratch
    outcomes = [Outcome.preferred.value]
    if (version.filter or {}).get("include_both_bad", True):
        outcomes.append(Outcome.both_bad.value)
    base = select(PreferenceItem.id).where(PreferenceItem.project_id == version.project_id,
                                           PreferenceItem.status.in_(RESOLVED),
                                           PreferenceItem.outcome.in_(outcomes))
    ids = np.array(sorted(int(i) for i in db.scalars(base)), dtype=np.int64)
    codes, positions = datasets_service.assign_splits(
        ids, np.full(len(ids), -1, dtype=np.int64), seed=version.seed, ratios=version.split)
    place = {int(i): (SPLITS[int(c)], int(p)) for i, c, p in zip(ids, codes, positions)}
    counts: Counter[str] = Counter()
    models: Counter[str] = Counter()
    id_list = [int(i) for i in ids]
    for start in range(0, len(id_list), BATCH):
        chunk = id_list[start:start + BATCH]
        items = {it.id: it for it in db.scalars(select(PreferenceItem).where(PreferenceItem.id.in_(chunk)))}
        cands = {c.id: c for c in db.scalars(select(PreferenceCandidate)
                                             .where(PreferenceCandidate.item_id.in_(chunk)))}
        rows = []
        for item_id in chunk:
            item = items[item_id]
            chosen_c, rejected_c = cands.get(item.chosen_id or -1), cands.get(item.rejected_id or -1)
            if chosen_c is None or rejected_c is None:
                counts["skipped_missing_candidate"] += 1
                continue
            if item.outcome == Outcome.preferred.value:
                chosen, rejected = item.chosen_text or chosen_c.content, [rejected_c.content]
                counts["pairs"] += 1
            else:
                chosen, rejected = None, [chosen_c.content, rejected_c.content]
                counts["both_bad"] += 1
            for c in (chosen_c, rejected_c):
                models[_source_of(c.provenance or {})] += 1
            split, position = place[item_id]
            counts[split] += 1
            rows.append(PreferenceVersionItem(
                version_id=version.id, item_id=item_id, split=split, position=position,
                outcome=item.outcome, prompt=[{"role": m["role"], "content": m["content"]}
                                              for m in item.prompt],
                chosen=chosen, rejected=rejected))
        db.add_all(rows)
        db.flush()
    excluded = dict(db.execute(select(PreferenceItem.status, func.count()).where(
        PreferenceItem.project_id == version.project_id,
        PreferenceItem.id.not_in(select(PreferenceVersionItem.item_id)
                                 .where(PreferenceVersionItem.version_id == version.id)))
        .group_by(PreferenceItem.status)).all())
    ties = db.scalar(select(func.count()).select_from(PreferenceItem).where(
        PreferenceItem.project_id == version.project_id, PreferenceItem.status.in_(RESOLVED),
        PreferenceItem.outcome == Outcome.tie.value)) or 0
    annotators = db.scalar(select(func.count(func.distinct(PreferenceDecision.annotator_id))).where(
        PreferenceDecision.project_id == version.project_id)) or 0
    version.counts = {**{s: counts.get(s, 0) for s in SPLITS},
                      "total": sum(counts.get(s, 0) for s in SPLITS),
                      "pairs": counts.get("pairs", 0), "both_bad": counts.get("both_bad", 0)}
    version.stats = {"excluded_by_status": {str(k): int(v) for k, v in excluded.items()},
                     "ties_excluded": int(ties), "annotators": int(annotators),
                     "candidate_sources": dict(sorted(models.items())),
                     "skipped_missing_candidate": counts.get("skipped_missing_candidate", 0)}
    version.status = "ready"
    version.built_at = utcnow()
    db.flush()
    return version


def _source_of(prov: dict[str, Any]) -> str:
    if prov.get("model"):
        return str(prov["model"])
    return "accepted sample" if prov.get("sample") else "import" if prov.get("import") else "manual"


def iter_frozen(db: Session, version_id: int, split: str) -> list[PreferenceVersionItem]:
    return list(db.scalars(select(PreferenceVersionItem).where(
        PreferenceVersionItem.version_id == version_id, PreferenceVersionItem.split == split)
        .order_by(PreferenceVersionItem.position)))
