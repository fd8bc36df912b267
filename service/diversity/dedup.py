"""Near-duplicate questions across a genre–audience fan-out's variants (or any set of
samples): the same one-permutation MinHash and LSH bands as the version leakage check
(``service/datasets/leakage.py``: character 5-gram shingles, 64 bins, 8 bands of 8), over the
user turns only, so two variants that ask the same thing in other words of the answer still
match. Each sample whose question nearly matches an earlier one's (estimated Jaccard
similarity >= ``threshold``) is reported with the earliest such sample, and tagged (a bulk
change with its revision) so review can filter them out or reject them in bulk."""
from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core import minhash
from service.core.errors import Invalid
from service.datasets import leakage
from service.models import Sample
from service.samples import service as samples_service

DEFAULT_TAG = "near-duplicate"
MAX_SAMPLES = 200_000


def question_text(messages: list[dict[str, str]]) -> str:
    return " ".join(" ".join(m["content"] for m in messages if m["role"] == "user").lower().split())


def near_duplicates(db: Session, *, project_id: int, generation_job_id: int | None,
                    sample_ids: list[int] | None, threshold: float, tag: str | None,
                    actor_id: int | None) -> dict[str, Any]:
    stmt = select(Sample.id, Sample.messages).where(Sample.project_id == project_id)
    if generation_job_id is not None:
        stmt = stmt.where(Sample.generation_job_id == generation_job_id)
    if sample_ids is not None:
        stmt = stmt.where(Sample.id.in_(sample_ids))
    rows = db.execute(stmt.order_by(Sample.id).limit(MAX_SAMPLES + 1)).all()
    if len(rows) > MAX_SAMPLES:
        raise Invalid(f"at most {MAX_SAMPLES} samples at once", details=[
            {"field": "body.generation_job_id", "message": "too many samples; narrow the set"}])
    pairs: dict[int, tuple[int, float]] = {}
    if len(rows) > 1:
        ids = np.array([r.id for r in rows], dtype=np.int64)
        sigs = leakage.signatures([question_text(r.messages) for r in rows])
        q, i = minhash.BandIndex(sigs, leakage.BANDS, leakage.ROWS).candidates(sigs)
        later = ids[q] > ids[i]
        q, i = q[later], i[later]
        sims = minhash.similarity(sigs[q], sigs[i])
        for a, b, s in zip(q.tolist(), i.tolist(), sims.tolist(), strict=True):
            if s >= threshold:
                sid, other = int(ids[a]), int(ids[b])
                if sid not in pairs or other < pairs[sid][0]:
                    pairs[sid] = (other, float(s))
    tagged = 0
    if tag and pairs:
        counts = samples_service.bulk_update(
            db, project_id=project_id, flt=samples_service.SampleFilter(ids=sorted(pairs)),
            actor_id=actor_id, add_tags=[tag])
        tagged = counts["changed"]
    return {"checked": len(rows), "tagged": tagged, "tag": tag,
            "pairs": [{"sample_id": sid, "duplicate_of": other, "similarity": round(s, 4)}
                      for sid, (other, s) in sorted(pairs.items())]}
