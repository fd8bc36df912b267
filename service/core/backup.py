"""``annotune backup`` / ``annotune restore``: the database and the data folder in one archive.

The archive (``.tar.gz``) holds ``manifest.json`` (format, schema revision, row counts, sha256 of
every member), one ``db/<table>.jsonl`` per table in dependency order, and ``files/`` (the data
folder: uploaded documents and imports, exports, training outputs; not the SQLite database
itself, the broker's folder, pid files or the converted-model cache, which are rebuilt). The rows are read in one
snapshot (``REPEATABLE READ`` on PostgreSQL, one read transaction on SQLite in WAL mode), so the
database part is consistent; files are copied after, so every file a row names is present (a
file written after the snapshot is extra, never missing one the rows need).

Rows name stored files by absolute path; a restore into another data folder rewrites them. Provider
API keys are encrypted with ``ANNOTUNE_SECRET_KEY``: restore with the same key to use them.

The row format is portable: a backup of PostgreSQL restores into SQLite and back. Restore needs
an empty database: it migrates it to the backup's revision, inserts the rows in dependency order
in one transaction (the database's triggers rebuild the derived counters as the samples go in;
an archive's copy of them is ignored), moves PostgreSQL's id sequences past the restored ids, and unpacks the
files; the archive's checksums are verified before anything is written.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Table, func, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine

from service.core.config import get_settings
from service.core.db import Base, UTCDateTime

FORMAT = "annotune-backup/1"
BATCH = 2000


class BackupError(Exception):
    """A backup or restore that cannot proceed; the message says why."""


def _tables() -> list[Table]:
    """The tables a backup holds: every model's, less the derived ones (``info["derived"]``,
    such as the trigger-kept sample counters, which inserting the rows rebuilds)."""
    import service.models  # noqa: F401 - every model registered on Base.metadata

    return [t for t in Base.metadata.sorted_tables if not t.info.get("derived")]


def _revision(conn: Connection) -> str | None:
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # noqa: BLE001 - no alembic_version table: an unmigrated database
        return None


def _encode(row: dict[str, Any]) -> bytes:
    return orjson.dumps({str(k): v for k, v in row.items()},
                        option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)


def _dump_rows(conn: Connection, table: Table) -> Iterator[bytes]:
    pk = list(table.primary_key.columns)
    stmt = select(table).order_by(*pk) if pk else select(table)
    for row in conn.execution_options(yield_per=BATCH).execute(stmt).mappings():
        yield _encode(dict(row)) + b"\n"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> str:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(datetime.now(UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(data).hexdigest()


def _data_files(data_dir: Path) -> Iterator[Path]:
    """The data folder's files worth keeping (see the module docstring)."""
    settings = get_settings()
    skip = [settings.broker_folder]
    if settings.local_model_cache is not None:
        skip.append(settings.local_model_cache.resolve())
    database = settings.resolved_database_url
    sqlite_file = Path(database[len("sqlite:///"):]).resolve() if database.startswith(
        "sqlite:///") else None
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        resolved = path.resolve()
        if any(resolved.is_relative_to(folder) for folder in skip) or path.suffix == ".pid":
            continue
        if sqlite_file is not None and resolved.name.startswith(sqlite_file.name) \
                and resolved.parent == sqlite_file.parent:
            continue  # the database (and its -wal/-shm) travels as rows
        yield path


def backup(engine: Engine, out: Path, *, data_dir: Path | None = None) -> dict[str, Any]:
    """Write the archive ``out``; returns its manifest."""
    data_dir = (data_dir or get_settings().data_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"format": FORMAT, "created_at": datetime.now(UTC).isoformat(),
                                "dialect": engine.dialect.name, "data_dir": str(data_dir),
                                "tables": {}, "members": {}}
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                manifest["revision"] = _revision(conn)
                if manifest["revision"] is None:
                    raise BackupError("the database is not migrated (no alembic_version)")
                for table in _tables():
                    data = b"".join(_dump_rows(conn, table))
                    name = f"db/{table.name}.jsonl"
                    manifest["members"][name] = _add(tar, name, data)
                    manifest["tables"][table.name] = data.count(b"\n")
        if data_dir.is_dir():
            for path in _data_files(data_dir):
                if path.resolve() == out.resolve() or path.name.endswith(".partial"):
                    continue
                name = f"files/{path.relative_to(data_dir).as_posix()}"
                manifest["members"][name] = _add(tar, name, path.read_bytes())
        _add(tar, "manifest.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    partial.replace(out)
    return manifest


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    member = tar.extractfile("manifest.json")
    if member is None:
        raise BackupError("not an annotune backup: no manifest.json")
    manifest: dict[str, Any] = json.loads(member.read())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unknown backup format {manifest.get('format')!r} (expected {FORMAT})")
    return manifest


def _decode(table: Table, line: bytes) -> dict[str, Any]:
    row: dict[str, Any] = orjson.loads(line)
    for column in table.columns:
        value = row.get(column.name)
        if isinstance(value, str) and isinstance(column.type, UTCDateTime):
            row[column.name] = datetime.fromisoformat(value)
    return row


def restore(engine: Engine, archive: Path, *, data_dir: Path | None = None) -> dict[str, Any]:
    """Restore ``archive`` into the empty database behind ``engine`` and the data folder."""
    from service.core import migrate

    data_dir = (data_dir or get_settings().data_dir).resolve()
    with tarfile.open(archive, "r:gz") as tar:
        manifest = _read_manifest(tar)
        contents: dict[str, bytes] = {}
        for name, digest in manifest["members"].items():
            member = tar.extractfile(name)
            data = member.read() if member is not None else b""
            if hashlib.sha256(data).hexdigest() != digest:
                raise BackupError(f"{name}: checksum mismatch; the archive is damaged")
            contents[name] = data
    with engine.connect() as conn:
        # the models' tables (a search index's shadow tables hold bookkeeping rows when empty)
        ours = {t.name for t in _tables()}
        existing = [t for t in inspect(conn).get_table_names() if t in ours]
        for table_name in existing:
            if conn.execute(select(func.count()).select_from(text(f'"{table_name}"'))).scalar():
                raise BackupError(f"the database is not empty (table {table_name} has rows); "
                                  "restore into a fresh database")
    migrate.upgrade(engine.url.render_as_string(hide_password=False),
                    revision=manifest["revision"])
    # rows name stored files by absolute path (documents, exports, training outputs, also
    # inside JSON): point them at the data folder restored into
    old, new = manifest.get("data_dir", ""), str(data_dir)
    if old and old != new:
        for name, data in list(contents.items()):
            if name.startswith("db/"):
                contents[name] = data.replace(old.encode(), new.encode())
    tables = _tables()
    with engine.begin() as conn:
        for table in tables:
            lines = contents.get(f"db/{table.name}.jsonl", b"").splitlines()
            for start in range(0, len(lines), BATCH):
                rows = [_decode(table, line) for line in lines[start:start + BATCH]]
                if rows:
                    conn.execute(insert(table), rows)
        if engine.dialect.name == "postgresql":
            _advance_sequences(conn, tables)
    staging = Path(tempfile.mkdtemp(prefix="annotune-restore-", dir=data_dir.parent
                                    if data_dir.parent.exists() else None))
    try:
        for name, data in contents.items():
            if not name.startswith("files/"):
                continue
            relative = Path(name[len("files/"):])
            if relative.is_absolute() or ".." in relative.parts:
                raise BackupError(f"{name}: a path outside the data folder")
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        data_dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            target = data_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _advance_sequences(conn: Connection, tables: list[Table]) -> None:
    for table in tables:
        for column in table.primary_key.columns:
            if not column.autoincrement or column.type.python_type is not int:
                continue
            seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                               {"t": table.name, "c": column.name}).scalar()
            if seq:
                conn.execute(text(f"SELECT setval('{seq}', COALESCE((SELECT MAX(\"{column.name}\") "
                                  f"FROM \"{table.name}\"), 0) + 1, false)"))
