"""Files under the data dir: streamed in with a running sha256, never named by the client."""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from service.core.config import get_settings
from service.core.errors import TooLarge

CHUNK = 1 << 20


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
