"""A real Celery worker process against the real Redis runs a task end to end."""
from __future__ import annotations

import pytest

from tests.support import worker as w

pytestmark = [pytest.mark.worker,
              pytest.mark.skipif(not w.redis_available(), reason="Redis not reachable")]


def test_real_worker_runs_ping_on_each_queue():
    w.purge()
    with w.running_worker("ingest,generate,gpu"):
        app = w.client()
        for queue in ("ingest", "generate", "gpu"):
            result = app.send_task("system.ping", kwargs={"payload": queue}, queue=queue)
            out = result.get(timeout=30)
            assert out["payload"] == queue and out["db"] == 1
