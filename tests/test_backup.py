"""`annotune backup` / `annotune restore`: everything a project holds comes back in a fresh
database and data folder — on SQLite, and on PostgreSQL when the suite runs there; a damaged
archive or a non-empty target is refused with the reason."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from service.core import backup as backup_mod
from service.core.config import get_settings
from service.core.db import Base, get_engine
from service.models import DatasetExport, Document, Sample
from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[1]


def _populate(client, factories, db) -> dict:
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "keep me"},
                      headers=owner.headers).json()["id"]
    base = f"/api/v1/projects/{pid}"
    for i in range(6):
        client.post(f"{base}/samples", headers=owner.headers, json={
            "status": "accepted", "tags": ["t"],
            "messages": [{"role": "user", "content": f"问题 {i}"},
                         {"role": "assistant", "content": f"answer {i}"}]})
    up = client.post(f"{base}/documents", headers=owner.headers, files=[
        ("files", ("notes.md", io.BytesIO(b"# Notes\n\nA paragraph to keep.\n"),
                   "text/markdown"))]).json()["results"][0]
    ds = client.post(f"{base}/datasets", headers=owner.headers, json={"name": "d"}).json()
    v = client.post(f"{base}/datasets/{ds['id']}/versions", headers=owner.headers,
                    json={"seed": 3}).json()
    client.post(f"{base}/datasets/{ds['id']}/versions/{v['id']}/exports", headers=owner.headers,
                json={"format": "openai"})
    return {"pid": pid, "document_id": up["document_id"], "version_id": v["id"]}


def _counts(engine) -> dict[str, int]:
    """Rows per table; the derived sample counters by what they count (their slot rows are
    bookkeeping that differs with the transactions that wrote them)."""
    with engine.connect() as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar()
                  for t in Base.metadata.sorted_tables if not t.info.get("derived")}
        rows = conn.execute(text("SELECT project_id, status, SUM(n) FROM project_sample_counts "
                                 "GROUP BY project_id, status")).all()
    counts["project_sample_counts"] = sorted((p, s, int(n)) for p, s, n in rows if n)
    return counts


@pytest.fixture
def target_url(tmp_path):
    """A fresh, empty database of the same kind as the suite's."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'restored.db'}"
        return
    url = make_url(PG_URL)
    name = f"annotune_restore_{os.getpid()}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_backup_then_restore_into_a_fresh_database_finds_everything(client, db, factories,
                                                                   tmp_path, target_url):
    made = _populate(client, factories, db)
    archive = tmp_path / "annotune.tar.gz"
    manifest = backup_mod.backup(get_engine(), archive)
    before = _counts(get_engine())
    assert manifest["tables"]["samples"] == before["samples"] >= 6
    assert "project_sample_counts" not in manifest["tables"]  # derived: rebuilt on restore
    assert sum(n for _, _, n in before["project_sample_counts"]) == before["samples"]
    assert any(m.startswith("files/") for m in manifest["members"])

    target = create_engine(target_url)
    files = tmp_path / "restored-data"
    backup_mod.restore(target, archive, data_dir=files)
    assert _counts(target) == before
    with target.connect() as conn:
        contents = sorted(conn.execute(select(Sample.messages)).scalars(), key=str)
        doc = conn.execute(select(Document).where(Document.id == made["document_id"])).one()
        export = conn.execute(select(DatasetExport)).one()
    assert any(m[0]["content"] == "问题 0" for m in contents)
    assert doc.storage_path.startswith(str(files)) and Path(doc.storage_path).is_file()
    assert Path(doc.storage_path).read_bytes().startswith(b"# Notes")
    assert export.path.startswith(str(files)) and (Path(export.path) / "manifest.json").is_file()
    # ids continue after the restored ones (PostgreSQL sequences moved past them)
    if PG_URL:
        with target.begin() as conn:
            new_id = conn.execute(text(
                "INSERT INTO projects (name, description, settings, created_at, updated_at) "
                "VALUES ('next', '', '{}', now(), now()) RETURNING id")).scalar()
        assert new_id > made["pid"]
    # a second restore into the same (now full) database is refused, nothing touched
    with pytest.raises(backup_mod.BackupError, match="not empty"):
        backup_mod.restore(target, archive, data_dir=files)
    target.dispose()


@pytest.mark.skipif(not PG_URL, reason="the suite runs on SQLite: the same-kind test covers it")
def test_a_postgresql_backup_restores_into_sqlite(client, db, factories, tmp_path):
    _populate(client, factories, db)
    archive = tmp_path / "pg.tar.gz"
    backup_mod.backup(get_engine(), archive)
    target = create_engine(f"sqlite:///{tmp_path / 'from-pg.db'}")
    backup_mod.restore(target, archive, data_dir=tmp_path / "from-pg-data")
    assert _counts(target) == _counts(get_engine())
    target.dispose()


def test_a_damaged_archive_is_refused(client, db, factories, tmp_path, target_url):
    _populate(client, factories, db)
    archive = tmp_path / "a.tar.gz"
    backup_mod.backup(get_engine(), archive)
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(archive, "r:gz") as src, tarfile.open(damaged, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name == "db/samples.jsonl":
                data = data.replace(b"answer 1", b"answer X")
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    target = create_engine(target_url)
    with pytest.raises(backup_mod.BackupError, match="db/samples.jsonl: checksum mismatch"):
        backup_mod.restore(target, damaged, data_dir=tmp_path / "f")
    assert _counts_or_empty(target) == 0
    target.dispose()


def _counts_or_empty(engine) -> int:
    from sqlalchemy import inspect

    with engine.connect() as conn:
        return len(inspect(conn).get_table_names())


def test_cli_backup_names_what_it_wrote(client, db, factories, tmp_path):
    _populate(client, factories, db)
    out = subprocess.run([sys.executable, "-m", "service.cli", "backup",
                          str(tmp_path / "cli.tar.gz")], cwd=ROOT, capture_output=True,
                         text=True, check=False, env={**os.environ,
                                                      "ANNOTUNE_DATA_DIR":
                                                      str(get_settings().data_dir)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rows in" in out.stdout and "files" in out.stdout and (tmp_path / "cli.tar.gz").is_file()
