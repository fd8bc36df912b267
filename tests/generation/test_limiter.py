"""The Redis concurrency limiter, across threads and processes, against real Redis."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from service.generation import llm
from service.generation.limiter import LimiterTimeout, LocalSemaphore, RedisSemaphore
from tests.support.openai_server import FakeOpenAIServer

redis = pytest.importorskip("redis")


def _redis_url() -> str:
    """The test Redis (from ANNOTUNE_TEST_REDIS_URL), the database above the test process's
    own (15 by default; each pytest-xdist worker has its own pair, see tests/conftest.py)."""
    parts = urlsplit(os.environ.get("ANNOTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14"))
    return urlunsplit(parts._replace(path=f"/{int(parts.path.strip('/') or 0) + 1}"))


REDIS_URL = _redis_url()


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    yield client
    client.close()


@pytest.fixture
def key(redis_client):
    prefix = f"annotune-test:limiter:{uuid.uuid4().hex}"
    yield prefix
    for name in redis_client.scan_iter(match=f"{prefix}*"):
        redis_client.delete(name)


# --- one process ---------------------------------------------------------------------------


def test_acquire_release_and_holders(redis_client, key):
    sem = RedisSemaphore(redis_client, key, limit=2, lease_seconds=10)
    a = sem.try_acquire()
    b = sem.try_acquire()
    assert a and b and a != b
    assert sem.try_acquire() is None
    assert sem.holders() == 2
    assert sem.release(a)
    assert not sem.release(a)  # already gone
    c = sem.acquire(timeout=1)
    assert c is not None and sem.holders() == 2
    assert sem.acquire(timeout=0.1) is None
    assert sem.acquire(blocking=False) is None
    sem.release(b)
    sem.release(c)
    assert sem.holders() == 0
    assert 0 < redis_client.pttl(key) <= 11_000 or redis_client.exists(key) == 0


def test_context_manager_shared_by_threads(redis_client, key):
    sem = RedisSemaphore(redis_client, key, limit=3, lease_seconds=10)
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def work() -> None:
        for _ in range(5):
            with sem:
                with lock:
                    state["now"] += 1
                    state["max"] = max(state["max"], state["now"])
                time.sleep(0.01)
                with lock:
                    state["now"] -= 1

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["max"] == 3
    assert sem.holders() == 0


def test_timeout_when_full(redis_client, key):
    sem = RedisSemaphore(redis_client, key, limit=1, lease_seconds=10, timeout=0.2)
    token = sem.try_acquire()
    t0 = time.monotonic()
    with pytest.raises(LimiterTimeout), sem:
        pass
    assert 0.15 < time.monotonic() - t0 < 3.0  # gave up after its 0.2 s, not the 10 s lease
    sem.release(token)
    with sem:
        assert sem.holders() == 1


def test_renew_extends_and_expired_leases_are_reclaimed(redis_client, key):
    sem = RedisSemaphore(redis_client, key, limit=1, lease_seconds=0.3)
    token = sem.try_acquire()
    assert sem.renew(token, lease_seconds=5)
    time.sleep(0.5)
    assert sem.try_acquire() is None  # renewed: still held after the first lease
    sem.release(token)

    stale = sem.try_acquire()
    time.sleep(0.4)  # lease (0.3 s) runs out without renewal
    fresh = sem.try_acquire()
    assert fresh is not None
    assert not sem.renew(stale)
    assert not sem.release(stale)
    assert sem.holders() == 1


def test_limit_can_change_between_acquires(redis_client, key):
    sem = RedisSemaphore(redis_client, key, limit=1, lease_seconds=10)
    first = sem.try_acquire()
    assert sem.try_acquire() is None
    sem.limit = 2
    assert sem.try_acquire() is not None
    sem.release(first)


def test_local_semaphore_same_interface():
    sem = LocalSemaphore(2, timeout=0.1)
    a = sem.acquire()
    b = sem.try_acquire()
    assert a and b and sem.holders() == 2
    assert sem.try_acquire() is None
    with pytest.raises(LimiterTimeout), sem:
        pass
    sem.release(a)
    with sem:
        assert sem.holders() == 2
    sem.release(b)
    assert sem.holders() == 0


# --- several processes ---------------------------------------------------------------------


def _hammer(url, redis_url, key, limit, threads, calls, ready, go, results):
    """In a child process: ``threads`` threads, each making ``calls`` limited LLM calls."""
    client = redis.Redis.from_url(redis_url)
    sem = RedisSemaphore(client, key, limit=limit, lease_seconds=30)
    settings = llm.ProviderSettings(
        base_url=url, model="fake-model", api_key="k", timeout=10, max_retries=0
    )
    done = []
    errors = []

    def run() -> None:
        go.wait(30)
        for i in range(calls):
            try:
                llm.chat(settings, [{"role": "user", "content": f"{os.getpid()}-{i}"}], limiter=sem)
                done.append(1)
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                errors.append(repr(exc))

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    ready.put(os.getpid())
    for t in pool:
        t.join()
    results.put({"pid": os.getpid(), "done": len(done), "errors": errors[:3]})


def test_two_processes_sixteen_threads_each_never_exceed_the_limit(redis_client, key):
    ctx = multiprocessing.get_context("spawn")
    limit, threads, calls = 8, 16, 4
    with FakeOpenAIServer(latency=0.05, record=False) as server:
        ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
        procs = [
            ctx.Process(
                target=_hammer,
                args=(server.url, REDIS_URL, key, limit, threads, calls, ready, go, results),
            )
            for _ in range(2)
        ]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                ready.get(timeout=60)
            go.set()
            outcomes = [results.get(timeout=120) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        stats = server.stats()

    assert all(p.exitcode == 0 for p in procs)
    assert [o["errors"] for o in outcomes] == [[], []]
    assert sum(o["done"] for o in outcomes) == 2 * threads * calls
    assert stats["chat_requests"] == 2 * threads * calls
    # Measured by the server: never more than the limit in flight, and the limit was reached.
    assert stats["max_in_flight"] <= limit
    assert stats["max_in_flight"] == limit
    assert RedisSemaphore(redis_client, key, limit=limit).holders() == 0


def _hold_forever(redis_url, key, lease, ready):
    client = redis.Redis.from_url(redis_url)
    sem = RedisSemaphore(client, key, limit=1, lease_seconds=lease)
    token = sem.acquire(timeout=10)
    ready.put(token)
    time.sleep(600)


def test_killed_holder_slot_is_reclaimed_after_the_lease(redis_client, key):
    ctx = multiprocessing.get_context("spawn")
    lease = 1.0
    ready = ctx.Queue()
    proc = ctx.Process(target=_hold_forever, args=(REDIS_URL, key, lease, ready))
    proc.start()
    try:
        token = ready.get(timeout=60)
        assert token is not None
    finally:
        proc.kill()  # SIGKILL: no chance to release
        proc.join(timeout=10)
    killed_at = time.monotonic()
    sem = RedisSemaphore(redis_client, key, limit=1, lease_seconds=30)
    assert sem.try_acquire() is None  # the dead worker still holds its lease
    mine = sem.acquire(timeout=5)
    waited = time.monotonic() - killed_at
    assert mine is not None
    assert waited <= lease + 1.0  # reclaimed by the lease, not by a long wait
    assert sem.holders() == 1
    assert not sem.release(token)  # the dead worker's token is gone
    assert sem.release(mine)
