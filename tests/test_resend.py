"""A job committed while the broker was down is sent again when a worker starts."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from tests.support import worker as w

pytestmark = [pytest.mark.worker, pytest.mark.skipif(not w.redis_available(), reason="no Redis")]


def test_queued_generation_job_is_picked_up_at_worker_start(db, client, factories, tmp_path):
    from service.generation import service as gs
    from service.models import GenerationJob, PromptTemplate
    from tests.generation.test_engine import make_chunks
    from tests.support.openai_server import FakeOpenAIServer

    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "resend"}, headers=owner.headers).json()["id"]
    make_chunks(db, pid, 3)
    with FakeOpenAIServer(responder=lambda r: "kw") as server:
        prov = gs.create_provider(db, project_id=pid, data={"name": "p", "base_url": server.url,
                                                             "model": "m"})
        gs.ensure_builtin_templates(db)
        tid = db.scalar(select(PromptTemplate.id).where(PromptTemplate.name == "keywords.en"))
        job = gs.create_job(db, project_id=pid, template_id=tid, provider_id=prov.id)
        db.info.pop("annotune_pending_tasks", None)  # the send "failed": nothing reached the broker
        db.commit()
        w.purge()
        with w.running_worker("generate", name="resend", log_path=tmp_path / "w.log"):
            deadline = time.time() + 60
            while time.time() < deadline:
                db.expire_all()
                if db.get(GenerationJob, job.id).status == "succeeded":
                    break
                time.sleep(0.3)
        db.expire_all()
        assert db.get(GenerationJob, job.id).status == "succeeded", (tmp_path / "w.log").read_text()[-2000:]
        assert db.get(GenerationJob, job.id).done_units == 3
