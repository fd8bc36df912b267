"""Start a real Celery worker process against the real Redis for a test."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from celery import Celery

from service.core.config import Settings
from service.core.jobs import configure_celery

REDIS_URL = os.environ.get("ANNOTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
ROOT = Path(__file__).resolve().parents[2]


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:  # noqa: BLE001 - any failure means: no Redis
        return False


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"ANNOTUNE_CELERY_EAGER": "false", "ANNOTUNE_BROKER_URL": REDIS_URL,
                "ANNOTUNE_RESULT_BACKEND": REDIS_URL, "ANNOTUNE_REDIS_URL": REDIS_URL,
                "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def client() -> Celery:
    settings = Settings(broker_url=REDIS_URL, result_backend=REDIS_URL, celery_eager=False,
                        database_url=os.environ["ANNOTUNE_DATABASE_URL"])
    return configure_celery(Celery("annotune-test-client"), settings)


def purge(queues: tuple[str, ...] = ("ingest", "generate", "gpu")) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    r.delete(*queues)
    for pattern in ("unacked*", "annotune:*"):
        for key in r.scan_iter(pattern):
            r.delete(key)


@contextmanager
def running_worker(queues: str = "ingest,generate,gpu", concurrency: int = 1, name: str = "w1",
                   pool: str = "prefork", log_path: Path | None = None, **env: str):
    log_path = log_path or Path(os.environ.get("ANNOTUNE_DATA_DIR", "/tmp")) / f"worker-{name}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed when the worker stops
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queues,
         "-c", str(concurrency), "--pool", pool, "-n", f"{name}@%h", "--loglevel", "INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=worker_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if b"ready." in log_path.read_bytes():
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited: {log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"worker not ready: {log_path.read_text(errors='replace')[-3000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            import signal

            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        log.close()


def wait_for(db, predicate, timeout: float, what: str, log: Path | None = None):
    """Poll ``predicate`` (re-reading the session) until it returns something truthy; on timeout
    fail with the end of the worker's log."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        db.expire_all()
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: "
                         + (log.read_text(errors="replace")[-3000:] if log else ""))


def route_to_worker(monkeypatch, *prefixes: str) -> None:
    """Tasks whose names start with ``prefixes`` go to the real broker (a running worker takes
    them); every other task still runs eagerly in the test process."""
    from service.core import jobs

    eager = jobs.send_now

    def send(name, _queue=None, **kw):
        if not name.startswith(prefixes):
            return eager(name, _queue=_queue, **kw)
        # a row's own queue (a provider-backed evaluation goes to ``generate``, not ``gpu``)
        client().send_task(name, kwargs=kw, queue=_queue or jobs.queue_for(name))

    monkeypatch.setattr(jobs, "send_now", send)
