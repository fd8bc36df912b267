"""Writing a preference version's exports: byte-for-byte reproducible, renamed into place.

Layout under ``settings.data_dir/preference_exports/<version_id>/<format>/`` (the approach of
``service/datasets/export.py``): ``<split>.jsonl`` for the non-empty splits (one
``orjson.dumps`` record a line, keys in the order written here, ``\\n`` after each),
``dataset_info.json`` for LLaMA-Factory's shapes, and ``manifest.json`` with the sha256, size and
record count of every other file plus the version's counts, split, seed, filter and ``built_at``.
Nothing depends on when or how often it is written.

Formats (a pair is the chosen text and one rejected text; items where both candidates were bad
only appear in ``kto``):

* ``sharegpt``: LLaMA-Factory's preference format, ``{"conversations": [{from, value}...],
  "system"?, "chosen": {from: gpt, value}, "rejected": {from: gpt, value}}`` with a
  ``ranking: true`` entry in ``dataset_info.json``;
* ``alpaca``: the same in LLaMA-Factory's alpaca shape, ``{"instruction", "input", "chosen",
  "rejected", "system"?, "history"?}``;
* ``trl``: TRL's conversational preference records ``{"prompt": [messages], "chosen":
  [assistant], "rejected": [assistant]}`` (DPOTrainer, ORPO);
* ``kto``: TRL's unpaired form ``{"prompt": [messages], "completion": [assistant], "label"}``:
  the chosen text ``true``, each rejected text ``false``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.errors import Conflict, NotFound
from service.datasets.export import NAME_RE, slug
from service.datasets.schemas import SPLITS
from service.models import PreferenceVersion, PreferenceVersionItem
from service.preferences.schemas import EXPORT_FORMATS

BATCH = 2000
LF_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human",
           "assistant_tag": "gpt", "system_tag": "system"}


def export_dir(version_id: int, fmt: str) -> Path:
    return (get_settings().data_dir / "preference_exports" / str(int(version_id)) / fmt).resolve()


# --- records ----------------------------------------------------------------------------------


def _split_system(prompt: list[dict[str, str]]) -> tuple[str | None, list[dict[str, str]]]:
    if prompt and prompt[0]["role"] == "system":
        return prompt[0]["content"], prompt[1:]
    return None, prompt


def records(fmt: str, item: PreferenceVersionItem) -> Iterator[dict[str, Any]]:
    """The export records of one frozen item in format ``fmt``."""
    prompt, chosen, rejected = item.prompt, item.chosen, item.rejected
    if fmt == "kto":
        if chosen is not None:
            yield {"prompt": prompt, "completion": [{"role": "assistant", "content": chosen}],
                   "label": True}
        for text in rejected:
            yield {"prompt": prompt, "completion": [{"role": "assistant", "content": text}],
                   "label": False}
        return
    if chosen is None:
        return  # both bad: no pair
    system, turns = _split_system(prompt)
    for text in rejected:
        if fmt == "trl":
            yield {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                   "rejected": [{"role": "assistant", "content": text}]}
        elif fmt == "sharegpt":
            rec: dict[str, Any] = {"conversations": [
                {"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]}
                for m in turns]}
            if system is not None:
                rec["system"] = system
            rec["chosen"] = {"from": "gpt", "value": chosen}
            rec["rejected"] = {"from": "gpt", "value": text}
            yield rec
        else:  # alpaca
            rec = {"instruction": turns[-1]["content"], "input": "", "chosen": chosen,
                   "rejected": text}
            if system is not None:
                rec["system"] = system
            if len(turns) > 1:
                rec["history"] = [[turns[i]["content"], turns[i + 1]["content"]]
                                  for i in range(0, len(turns) - 1, 2)]
            yield rec


def dataset_info_entry(fmt: str, file_name: str, *, has_system: bool, has_history: bool
                       ) -> dict[str, Any]:
    """LLaMA-Factory's ``dataset_info.json`` entry of a ``sharegpt``/``alpaca`` preference file
    (``ranking: true``; a column is named only when some record has it)."""
    if fmt == "sharegpt":
        columns = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
        if has_system:
            columns["system"] = "system"
        return {"file_name": file_name, "formatting": "sharegpt", "ranking": True,
                "columns": columns, "tags": dict(LF_TAGS)}
    columns = {"prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}
    if has_system:
        columns["system"] = "system"
    if has_history:
        columns["history"] = "history"
    return {"file_name": file_name, "formatting": "alpaca", "ranking": True, "columns": columns}


# --- writing ----------------------------------------------------------------------------------


def _frozen(db: Session, version_id: int, split: str) -> Iterator[PreferenceVersionItem]:
    stmt = (select(PreferenceVersionItem).where(PreferenceVersionItem.version_id == version_id,
                                                PreferenceVersionItem.split == split)
            .order_by(PreferenceVersionItem.position))
    yield from db.scalars(stmt, execution_options={"yield_per": BATCH})


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def _write(path: Path, data: bytes) -> dict[str, Any]:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _write_split(db: Session, path: Path, version_id: int, split: str, fmt: str) -> dict[str, Any]:
    sha = hashlib.sha256()
    size = n = 0
    has_system = has_history = False
    with open(path, "wb", buffering=1 << 20) as fh:
        for item in _frozen(db, version_id, split):
            for rec in records(fmt, item):
                line = orjson.dumps(rec) + b"\n"
                sha.update(line)
                fh.write(line)
                size += len(line)
                n += 1
                has_system = has_system or "system" in rec
                has_history = has_history or "history" in rec
        fh.flush()
        os.fsync(fh.fileno())
    return {"sha256": sha.hexdigest(), "bytes": size, "records": n, "split": split,
            "has_system": has_system, "has_history": has_history}


def write_export(db: Session, version: PreferenceVersion, fmt: str) -> dict[str, Any]:
    """Write (or rewrite: the same bytes) every file of the export; returns the manifest's
    ``files`` and its sha256."""
    if fmt not in EXPORT_FORMATS:
        raise NotFound(f"unknown export format {fmt!r}", code="format_not_found")
    if version.status != "ready":
        raise Conflict("the version is not ready", code="version_not_ready")
    final = export_dir(version.id, fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{fmt}.staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        files: dict[str, dict[str, Any]] = {}
        info: dict[str, Any] = {}
        base = f"{slug(version.name)}_p{version.number}"
        for split in SPLITS:
            if not (version.counts or {}).get(split):
                continue
            name = f"{split}.jsonl"
            meta = _write_split(db, staging / name, version.id, split, fmt)
            has_system, has_history = meta.pop("has_system"), meta.pop("has_history")
            if meta["records"] == 0:
                (staging / name).unlink()
                continue
            files[name] = meta
            if fmt in ("sharegpt", "alpaca"):
                info[f"{base}_{split}"] = dataset_info_entry(fmt, name, has_system=has_system,
                                                             has_history=has_history)
        if info:
            files["dataset_info.json"] = _write(staging / "dataset_info.json", _json(info))
        manifest = {
            "generator": "annotune", "kind": "preference",
            "version": {"id": version.id, "number": version.number, "name": version.name,
                        "built_at": version.built_at.isoformat() if version.built_at else None},
            "format": fmt, "counts": version.counts, "files": files, "filter": version.filter,
            "split": version.split, "seed": version.seed,
            "split_method": "sha256(f'{seed}:{item_id}') order",
            "stats": version.stats,
        }
        files = {**files, "manifest.json": _write(staging / "manifest.json", _json(manifest))}
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"format": fmt, "files": files, "manifest_sha256": files["manifest.json"]["sha256"]}


def file_path(version: PreferenceVersion, fmt: str, name: str) -> Path:
    folder = export_dir(version.id, fmt)
    if fmt not in EXPORT_FORMATS or not NAME_RE.fullmatch(name):
        raise NotFound("no such file in this export", code="file_not_found")
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise NotFound("no such file in this export (write the export first)",
                       code="file_not_found")
    return path
