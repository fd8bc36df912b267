"""Datasets and their versions: create, freeze (build), compare.

A version is built in three streamed passes over the database, never holding the samples in
memory:

1. **select**: the ids (and document ids) of the samples the filter matches, read with a
   server-side cursor into compact numpy arrays (8 bytes a column a sample);
2. **split** (``assign_splits``): a pure function of those ids, the seed and the ratios. Each
   sample's sort key is the first 8 bytes (big-endian) of ``sha256(f"{seed}:{sample_id}")``; with
   ``stratify_by="document"`` whole documents are placed by ``sha256(f"{seed}:doc:{document_id}")``.
   No database ordering, collation or float arithmetic of the backend is involved, so the same
   samples give the same split on PostgreSQL and SQLite, in every run;
3. **freeze** (``datasets.build``): the samples are read again (by id, server-side cursor, a
   batch ahead in a thread) and each one's current messages (checked by the validation gate
   and reduced to role/content: ``freeze.frozen_messages``), version and latest revision id
   are copied into ``DatasetVersionItem`` rows in batches, while the statistics and the
   near-duplicate leakage signatures (``datasets.leakage``: one-permutation MinHash and LSH
   bands in numpy) are computed batch by batch. A sample the gate refuses (anything an export
   format would drop or a consumer such as OpenAI's format check or LLaMA-Factory's loader
   would reject: an empty turn, a broken role order, ...) is not frozen: the pass goes on to
   find every such sample, then the build fails with :class:`Unexportable`, naming them.
"""
from __future__ import annotations

import difflib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.config import get_settings
from service.core.errors import Conflict, Invalid, NotFound
from service.core.lookup import get_in_project
from service.core.pagination import paginate
from service.datasets import build, leakage, strata
from service.datasets.freeze import Unexportable  # noqa: F401 (re-exported: the runner catches it)
from service.datasets.jobs import BUILD, EXPORT
from service.datasets.schemas import EXPORT_FORMATS, SPLITS, VersionCreate, VersionFilter
from service.models import (
    Dataset,
    DatasetExport,
    DatasetVersion,
    DatasetVersionItem,
    Sample,
)
from service.samples import service as samples_service

BATCH = 5000
log = logging.getLogger(__name__)

# --- datasets ---------------------------------------------------------------------------------


def create_dataset(db: Session, *, project_id: int, name: str, description: str = "",
                   default_format: str = "openai") -> Dataset:
    name = name.strip()
    if not name:
        raise Invalid("name must not be empty", details=[{"field": "body.name", "message": "empty"}])
    exists = db.scalar(select(Dataset.id).where(Dataset.project_id == project_id, Dataset.name == name))
    if exists is not None:
        raise Conflict(f"a dataset named {name!r} already exists", code="dataset_exists")
    dataset = Dataset(project_id=project_id, name=name, description=description,
                      default_format=default_format)
    db.add(dataset)
    db.flush()
    return dataset


def list_datasets(db: Session, *, project_id: int, limit: int = 50, cursor: str | None = None
                  ) -> tuple[list[Dataset], str | None]:
    stmt = select(Dataset).where(Dataset.project_id == project_id)
    return paginate(db, stmt, Dataset.id, limit=limit, cursor=cursor, descending=True)


def get_dataset(db: Session, *, project_id: int, dataset_id: int) -> Dataset:
    return get_in_project(db, Dataset, dataset_id, project_id=project_id, what="dataset",
                          code="dataset_not_found")


# --- versions ---------------------------------------------------------------------------------


def create_version(db: Session, *, dataset: Dataset, spec: VersionCreate,
                   actor_id: int | None = None) -> DatasetVersion:
    """A ``queued`` version numbered after the dataset's last one; the build runs after commit."""
    # serialise numbering per dataset (a no-op on SQLite, where writers are serialised anyway)
    db.execute(select(Dataset.id).where(Dataset.id == dataset.id).with_for_update())
    last = db.scalar(select(func.max(DatasetVersion.number))
                     .where(DatasetVersion.dataset_id == dataset.id)) or 0
    version = DatasetVersion(
        dataset_id=dataset.id, project_id=dataset.project_id, number=last + 1, status="queued",
        filter=spec.filter.model_dump(mode="json"), split=spec.split.model_dump(mode="json"),
        seed=spec.seed, stratify_by=spec.stratify_by, reasoning=spec.reasoning, counts={},
        stats={}, leakage=[],
        created_by_id=actor_id)
    db.add(version)
    db.flush()
    jobs.enqueue(db, BUILD, version)
    return version


def list_versions(db: Session, *, dataset_id: int, limit: int = 50, cursor: str | None = None
                  ) -> tuple[list[DatasetVersion], str | None]:
    stmt = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
    return paginate(db, stmt, DatasetVersion.id, limit=limit, cursor=cursor, descending=True)


def get_version(db: Session, *, project_id: int, version_id: int,
                dataset_id: int | None = None) -> DatasetVersion:
    version = get_in_project(db, DatasetVersion, version_id, project_id=project_id,
                             what="dataset version", code="version_not_found")
    if dataset_id is not None and version.dataset_id != dataset_id:
        raise NotFound("dataset version not found", code="version_not_found")
    return version


# --- split assignment (pure) --------------------------------------------------------------------


def sort_key(text: str) -> int:
    """First 8 bytes of sha256(text), big-endian: the stable, backend-independent sort key."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def target_counts(n: int, ratios: dict[str, float]) -> list[int]:
    """Split ``n`` by ``ratios`` (largest remainder; ties go to the earlier split)."""
    raw = [n * float(ratios.get(s, 0.0)) for s in SPLITS]
    counts = [math.floor(x) for x in raw]
    rest = n - sum(counts)
    order = sorted(range(len(SPLITS)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


def assign_splits(ids: np.ndarray, document_ids: np.ndarray, *, seed: int,
                  ratios: dict[str, float], stratify_by: str | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Split codes (index into ``SPLITS``) and positions within the split, aligned with ``ids``.

    ``document_ids`` uses -1 for "no document"; when stratifying, such a sample is a group of its
    own. Groups (or samples) are taken in key order and each goes to the split that is furthest
    below its target count (ties: train, validation, test); splits with ratio 0 get nothing.
    """
    n = len(ids)
    codes = np.zeros(n, dtype=np.int8)
    positions = np.zeros(n, dtype=np.int64)
    if n == 0:
        return codes, positions
    skey = np.fromiter((sort_key(f"{seed}:{int(i)}") for i in ids), dtype=np.uint64, count=n)
    targets = target_counts(n, ratios)
    if stratify_by == "domain_leaf":  # ``document_ids`` holds the leaves: split each in the ratios
        order, sorted_codes = strata.by_leaf(ids, document_ids, skey, ratios, target_counts)
    elif stratify_by != "document":
        order = np.lexsort((ids, skey))
        sorted_codes = np.repeat(np.arange(len(SPLITS), dtype=np.int8), targets)
    else:
        doc_keys: dict[int, int] = {}
        gkey = np.empty(n, dtype=np.uint64)
        gident = np.empty(n, dtype=np.int64)
        for j in range(n):
            d = int(document_ids[j])
            if d < 0:
                gkey[j], gident[j] = skey[j], -int(ids[j]) - 1
            else:
                k = doc_keys.get(d)
                if k is None:
                    k = doc_keys[d] = sort_key(f"{seed}:doc:{d}")
                gkey[j], gident[j] = k, d
        order = np.lexsort((ids, skey, gident, gkey))
        g_sorted = gident[order]
        starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        sizes = np.diff(np.r_[starts, n])
        eligible = [i for i, s in enumerate(SPLITS) if float(ratios.get(s, 0.0)) > 0]
        assigned = [0] * len(SPLITS)
        group_codes = np.empty(len(starts), dtype=np.int8)
        for gi, size in enumerate(sizes.tolist()):
            best = max(eligible, key=lambda i: (targets[i] - assigned[i], -i))
            assigned[best] += size
            group_codes[gi] = best
        sorted_codes = np.repeat(group_codes, sizes)
    sorted_pos = np.zeros(n, dtype=np.int64)
    for c in range(len(SPLITS)):
        mask = sorted_codes == c
        sorted_pos[mask] = np.arange(int(mask.sum()), dtype=np.int64)
    codes[order] = sorted_codes
    positions[order] = sorted_pos
    return codes, positions


# --- build ------------------------------------------------------------------------------------


def _filter_stmt(stmt: Any, project_id: int, flt: VersionFilter, dialect: str) -> Any:
    """``stmt`` limited to the samples ``flt`` takes, in id order; the tag and score criteria
    are the samples list's own clauses (``samples.service.has_any_tag`` / ``score_between``),
    so a version takes exactly what the list shows for the same filter, on either database."""
    stmt = strata.where_leaves(stmt, flt).where(Sample.project_id == project_id,
                                                Sample.status.in_([s.value for s in flt.status]))
    if flt.document_ids is not None:
        stmt = stmt.where(Sample.document_id.in_(flt.document_ids))
    if flt.created_from is not None:
        stmt = stmt.where(Sample.created_at >= flt.created_from)
    if flt.created_to is not None:
        stmt = stmt.where(Sample.created_at <= flt.created_to)
    if flt.tags is not None:
        stmt = stmt.where(samples_service.has_any_tag(dialect, flt.tags))
    if flt.score is not None:
        stmt = stmt.where(samples_service.score_between(dialect, flt.score.key, flt.score.min,
                                                        flt.score.max))
    return stmt.order_by(Sample.id)


def _stream(db: Session, stmt: Any, batch: int) -> Iterator[Any]:
    """Rows of ``stmt`` through a server-side cursor, ``batch`` at a time (JSON read by orjson
    on PostgreSQL)."""
    conn = db.connection()
    raw = conn.connection.driver_connection if conn.dialect.driver == "psycopg" else None
    if raw is not None:
        from psycopg.types.json import set_json_loads

        set_json_loads(orjson.loads, raw)
    try:
        result = db.execute(stmt, execution_options={"yield_per": batch, "stream_results": True})
        try:
            yield from result
        finally:
            result.close()
    finally:
        if raw is not None and not raw.closed:
            import json

            set_json_loads(json.loads, raw)


def select_candidates(db: Session, *, project_id: int, flt: VersionFilter,
                      batch: int = BATCH, by: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: ids (ascending) and document ids (``by`` domain_leaf: leaves; -1 for none)."""
    # two integer columns: a Core result a batch at a time, no ORM row per sample (a third of
    # the time at 1M samples)
    stmt = _filter_stmt(select(Sample.id, func.coalesce(strata.group_column(by), -1)),
                        project_id, flt, db.get_bind().dialect.name)
    result = db.connection().execute(stmt.execution_options(yield_per=batch,
                                                            stream_results=True))
    id_parts, doc_parts = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    try:
        for part in result.partitions(batch):
            id_parts.append(np.fromiter((r[0] for r in part), np.int64, len(part)))
            doc_parts.append(np.fromiter((r[1] for r in part), np.int64, len(part)))
    finally:
        result.close()
    return np.concatenate(id_parts), np.concatenate(doc_parts)


def build_version(db: Session, version_id: int, *, batch: int = BATCH,
                  leakage_max: int = leakage.MAX_SAMPLES,
                  on_progress: Callable[[int, int], None] | None = None,
                  read: Session | None = None) -> DatasetVersion:
    """Freeze the version's samples into items, with counts, stats and the leakage report.
    ``on_progress(done, total)``: after the selection and after every batch.
    ``read``: the session the samples are selected through (default ``db``, which writes)."""
    read = read or db
    version = db.get(DatasetVersion, version_id)
    if version is None:
        raise NotFound("dataset version not found", code="version_not_found")
    if version.status == "ready":
        return version
    flt = VersionFilter.model_validate(version.filter)
    started = time.perf_counter()
    ids, docs = select_candidates(read, project_id=version.project_id, flt=flt, batch=batch,
                                  by=version.stratify_by)
    selected = time.perf_counter()
    codes, positions = assign_splits(ids, docs, seed=version.seed, ratios=version.split,
                                     stratify_by=version.stratify_by)
    log.info("version %s: %d samples selected in %.1f s, split in %.1f s", version_id, len(ids),
             selected - started, time.perf_counter() - selected)

    return build.freeze(db, read, version,
                        rows_filter(version.project_id, version.filter, read.get_bind().dialect.name),
                        ids, codes, positions, batch=batch, leakage_max=leakage_max,
                        on_progress=on_progress, shards=_shards(len(ids)))


def rows_filter(project_id: int, spec: dict[str, Any], dialect: str) -> Callable[[Any], Any]:
    """A version's filter (its stored ``filter``) as a function adding it to a statement for a
    ``dialect`` database."""
    flt = VersionFilter.model_validate(spec)
    return lambda stmt: _filter_stmt(stmt, project_id, flt, dialect)


def _shards(n: int) -> int:
    """Processes for the freeze loop of ``n`` samples (settings ``build_shards``, from
    ``build_shard_min`` samples on: a child process costs ~1 s to start)."""
    settings = get_settings()
    return max(1, settings.build_shards) if n >= settings.build_shard_min else 1


# --- diff -------------------------------------------------------------------------------------


def _render(messages: list[dict[str, str]]) -> list[str]:
    lines: list[str] = []
    for m in messages:
        lines.append(f"[{m['role']}]")
        lines.extend(m["content"].splitlines() or [""])
    return lines


def diff_versions(db: Session, *, a: DatasetVersion, b: DatasetVersion, limit: int = 200,
                  batch: int = BATCH) -> dict[str, Any]:
    """Added, removed and changed samples and split moves from ``a`` to ``b`` (merge join by
    sample id over two streamed cursors). Lists are capped at ``limit`` each; the summary counts
    everything."""
    for v in (a, b):
        if v.status != "ready":
            raise Conflict(f"version {v.number} is {v.status}, not ready", code="version_not_ready")

    def rows(version_id: int) -> Iterator[Any]:
        stmt = (select(DatasetVersionItem.sample_id, DatasetVersionItem.split,
                       DatasetVersionItem.content_hash, DatasetVersionItem.sample_version)
                .where(DatasetVersionItem.version_id == version_id)
                .order_by(DatasetVersionItem.sample_id))
        return _stream(db, stmt, batch)

    summary = {"added": 0, "removed": 0, "changed": 0, "split_changes": 0, "unchanged": 0}
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    changed_ids: list[tuple[int, str, str, int, int]] = []
    moves: list[dict[str, Any]] = []
    ia, ib = rows(a.id), rows(b.id)
    ra, rb = next(ia, None), next(ib, None)
    while ra is not None or rb is not None:
        if rb is None or (ra is not None and ra[0] < rb[0]):
            summary["removed"] += 1
            if len(removed) < limit:
                removed.append({"sample_id": ra[0], "split": ra[1]})
            ra = next(ia, None)
        elif ra is None or rb[0] < ra[0]:
            summary["added"] += 1
            if len(added) < limit:
                added.append({"sample_id": rb[0], "split": rb[1]})
            rb = next(ib, None)
        else:
            same = True
            if ra[2] != rb[2]:
                same = False
                summary["changed"] += 1
                if len(changed_ids) < limit:
                    changed_ids.append((ra[0], ra[1], rb[1], ra[3], rb[3]))
            if ra[1] != rb[1]:
                same = False
                summary["split_changes"] += 1
                if len(moves) < limit:
                    moves.append({"sample_id": ra[0], "from_split": ra[1], "to_split": rb[1]})
            summary["unchanged"] += same
            ra, rb = next(ia, None), next(ib, None)

    changed: list[dict[str, Any]] = []
    if changed_ids:
        wanted = [c[0] for c in changed_ids]
        msgs: dict[tuple[int, int], list[dict[str, str]]] = {}
        for vid, sid, m in db.execute(
                select(DatasetVersionItem.version_id, DatasetVersionItem.sample_id,
                       DatasetVersionItem.messages)
                .where(DatasetVersionItem.version_id.in_([a.id, b.id]),
                       DatasetVersionItem.sample_id.in_(wanted))):
            msgs[(vid, sid)] = m
        for sid, split_a, split_b, va, vb in changed_ids:
            text = "\n".join(difflib.unified_diff(
                _render(msgs[(a.id, sid)]), _render(msgs[(b.id, sid)]),
                fromfile=f"v{a.number}/sample-{sid}", tofile=f"v{b.number}/sample-{sid}", lineterm=""))
            changed.append({"sample_id": sid, "split_a": split_a, "split_b": split_b,
                            "sample_version_a": va, "sample_version_b": vb, "diff": text})
    truncated = any(summary[k] > limit for k in ("added", "removed", "changed", "split_changes"))
    return {"a": a.id, "b": b.id, "summary": summary, "added": added, "removed": removed,
            "changed": changed, "split_changes": moves, "truncated": truncated}


# --- exports (rows; the files are written by service.datasets.export) ---------------------------


def create_export(db: Session, *, version: DatasetVersion, fmt: str) -> tuple[DatasetExport, bool]:
    """The export of ``version`` in ``fmt``, queued if new (or failed before): idempotent."""
    if fmt not in EXPORT_FORMATS:
        raise Invalid(f"unknown format {fmt!r}",
                      details=[{"field": "body.format", "message": f"one of {list(EXPORT_FORMATS)}"}])
    if version.status != "ready":
        raise Conflict(f"version is {version.status}; it can be exported once ready",
                       code="version_not_ready")
    export = db.scalar(select(DatasetExport).where(DatasetExport.version_id == version.id,
                                                   DatasetExport.format == fmt))
    if export is not None and export.status != "failed" and not jobs.is_dead(EXPORT, export):
        return export, False
    if export is None:
        export = DatasetExport(version_id=version.id, format=fmt, status="queued", progress=0,
                               files={})
        db.add(export)
    else:
        export.status, export.error, export.progress = "queued", None, 0
        export.attempts, export.lease_token, export.sent_at = 0, None, None
    db.flush()
    jobs.enqueue(db, EXPORT, export)
    return export, True


def list_exports(db: Session, *, version_id: int) -> list[DatasetExport]:
    return list(db.scalars(select(DatasetExport).where(DatasetExport.version_id == version_id)
                           .order_by(DatasetExport.format)))


def get_export(db: Session, *, version_id: int, fmt: str) -> DatasetExport:
    export = db.scalar(select(DatasetExport).where(DatasetExport.version_id == version_id,
                                                   DatasetExport.format == fmt))
    if export is None:
        raise NotFound("export not found", code="export_not_found")
    return export
