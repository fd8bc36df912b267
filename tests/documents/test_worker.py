"""Parsing runs on the ingest queue in a real worker; a zip bomb fails alone and the worker lives."""
from __future__ import annotations

import io
import time

import pytest

from tests.documents.test_parsing import make_zip_bomb
from tests.support import worker as w

pytestmark = [pytest.mark.worker, pytest.mark.skipif(not w.redis_available(), reason="no Redis")]


def test_zip_bomb_fails_and_the_worker_keeps_parsing(db, factories, tmp_path):
    from service.documents import service as documents_service
    from service.models import Document

    user = factories.make_user(db)
    project = factories.make_project(db, user)
    bomb = make_zip_bomb(tmp_path / "bomb.docx", mib=1024)
    ids = []
    for name, stream in (("bomb.docx", open(bomb, "rb")),  # noqa: SIM115 - closed below
                         ("ok.md", io.BytesIO("# 标题\n\n正文 text.\n".encode()))):
        with stream:
            ids.append(documents_service.upload_document(
                db, project_id=project.id, filename=name, content_type=None, stream=stream,
                actor_id=user.id)["document_id"])
    db.info.pop("annotune_pending_tasks", None)  # send through the real broker instead
    db.commit()
    w.purge()
    with w.running_worker("ingest", name="ingest1") as proc:
        app = w.client()
        for doc_id in ids:
            app.send_task("documents.parse", kwargs={"document_id": doc_id}, queue="ingest")
        deadline = time.time() + 60
        while time.time() < deadline:
            db.expire_all()
            statuses = [db.get(Document, i).status for i in ids]
            if all(s in ("parsed", "failed") for s in statuses):
                break
            time.sleep(0.3)
        assert statuses == ["failed", "parsed"]
        assert "zip bomb" in db.get(Document, ids[0]).error
        assert proc.poll() is None  # the worker survived
