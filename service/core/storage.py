"""Files under the data dir: streamed in with a running sha256, never named by the client."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import event
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.errors import TooLarge

CHUNK = 1 << 20
log = logging.getLogger(__name__)


@dataclass
class StoredFile:
    path: Path
    size: int
    sha256: str


def area(name: str) -> Path:
    path = get_settings().files_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_stream(src: BinaryIO, *, area_name: str, max_bytes: int, suffix: str = "") -> StoredFile:
    """Copy ``src`` to a generated name in ``area_name``; 413 (and nothing kept) over ``max_bytes``."""
    folder = area(area_name)
    final = folder / f"{uuid.uuid4().hex}{suffix}"
    tmp = final.with_name(final.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            while True:
                block = src.read(CHUNK)
                if not block:
                    break
                size += len(block)
                if size > max_bytes:
                    raise TooLarge(f"file is larger than the limit of {max_bytes} bytes",
                                   extra={"limit_bytes": max_bytes})
                digest.update(block)
                out.write(block)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return StoredFile(final, size, digest.hexdigest())


# -- files removed with the rows that own them ---------------------------------------------------

_REMOVE_KEY = "annotune_remove_after_commit"


def remove_after_commit(db: Session, paths: Iterable[str | Path | None]) -> None:
    """Delete these files or folders once ``db``'s transaction commits (kept if it rolls back).

    Only paths inside the data folder are ever removed."""
    db.info.setdefault(_REMOVE_KEY, []).extend(Path(p) for p in paths if p)


@event.listens_for(Session, "after_commit")
def _remove_committed(session: Session) -> None:
    paths = session.info.pop(_REMOVE_KEY, None)
    if not paths:
        return
    root = get_settings().data_dir.resolve()
    for path in paths:
        try:
            target = path.resolve()
            if not target.is_relative_to(root) or target == root:
                continue
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove %s", path, exc_info=True)


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_REMOVE_KEY, None)
