from __future__ import annotations

import threading
import time
import uuid

import pytest

from service.generation.ratelimit import RateLimiter
from tests.support import worker as w


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def time(self):
        return self.now

    def sleep(self, seconds):
        with self.lock:
            self.now += seconds


@pytest.mark.nodb
def test_requests_per_minute_in_process():
    clock = FakeClock()
    rl = RateLimiter("k", rpm=3, tpm=None, sleep=clock.sleep, clock=clock.time)
    starts = []
    for _ in range(7):
        rl.before_request()
        starts.append(clock.now)
    windows = [int(t // 60) for t in starts]
    assert [windows.count(wdx) for wdx in sorted(set(windows))] == [3, 3, 1]


@pytest.mark.nodb
def test_tokens_per_minute_blocks_until_the_next_window():
    clock = FakeClock()
    rl = RateLimiter("k", rpm=None, tpm=100, sleep=clock.sleep, clock=clock.time)
    rl.before_request()
    rl.record_tokens(120)
    start = clock.now
    rl.before_request()
    assert int(clock.now // 60) == int(start // 60) + 1


@pytest.mark.nodb
@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
def test_requests_per_window_shared_through_redis_by_threads():
    import redis

    r = redis.Redis.from_url(w.REDIS_URL)
    key = f"annotune-test:rate:{uuid.uuid4().hex}"
    seen = threading.local()

    def clock() -> float:  # the real clock, remembering what this thread's limiter last read
        seen.now = time.time()
        return seen.now

    limiters = [RateLimiter(key, rpm=4, tpm=None, redis=r, window_seconds=1.0, clock=clock)
                for _ in range(2)]
    times: list[float] = []
    lock = threading.Lock()

    def call(rl):
        for _ in range(4):
            rl.before_request()
            with lock:  # the time the request was counted at, not when the call returned (a
                # request counted at x.9999 s returns in the next second on a busy machine)
                times.append(seen.now)

    threads = [threading.Thread(target=call, args=(rl,)) for rl in limiters]
    [t.start() for t in threads]
    [t.join() for t in threads]
    per_window: dict[int, int] = {}
    for t in times:
        per_window[int(t // 1.0)] = per_window.get(int(t // 1.0), 0) + 1
    assert len(times) == 8 and max(per_window.values()) <= 4 and len(per_window) >= 2
    for k in r.scan_iter(f"{key}*"):
        r.delete(k)
