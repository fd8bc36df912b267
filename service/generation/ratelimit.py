"""Requests-per-minute and tokens-per-minute limits for a provider, shared by every worker.

Fixed windows (one minute by default) counted in Redis (``INCR``/``INCRBY`` with expiry), or in
this process when no Redis is configured. ``before_request`` blocks until the current window has
room for one more request and the tokens used in it are under the limit; ``record_tokens`` adds
what a finished call used. :class:`ProviderLimiter` combines this with the concurrency semaphore
as the one context manager that ``llm.chat`` enters around each HTTP request.
"""
from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import Any


class RateLimiter:
    def __init__(self, key: str, *, rpm: int | None, tpm: int | None, redis: Any = None,
                 window_seconds: float = 60.0, sleep=time.sleep, clock=time.time):
        self.key, self.rpm, self.tpm, self.redis = key, rpm, tpm, redis
        self.window = window_seconds
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()
        self._local: dict[tuple[str, int], int] = defaultdict(int)

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    def _window(self) -> tuple[int, float]:
        now = self._clock()
        index = int(now // self.window)
        return index, (index + 1) * self.window - now

    def _incr(self, kind: str, index: int, amount: int) -> int:
        if self.redis is not None:
            import redis

            name = f"{self.key}:{kind}:{index}"
            try:
                pipe = self.redis.pipeline()
                pipe.incrby(name, amount)
                pipe.expire(name, int(self.window * 2) + 1)
                return int(pipe.execute()[0])
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # Redis restarting: count in this process until it is back
        with self._lock:
            self._local[(kind, index)] += amount
            return self._local[(kind, index)]

    def _get(self, kind: str, index: int) -> int:
        if self.redis is not None:
            import redis

            try:
                return int(self.redis.get(f"{self.key}:{kind}:{index}") or 0)
            except (redis.ConnectionError, redis.TimeoutError):
                pass
        with self._lock:
            return self._local.get((kind, index), 0)

    def _wait(self, remaining: float) -> None:
        self._sleep(remaining + random.uniform(0, min(1.0, self.window * 0.05)))

    def before_request(self) -> None:
        while True:
            index, remaining = self._window()
            if self.tpm and self._get("t", index) >= self.tpm:
                self._wait(remaining)
                continue
            if self.rpm and self._incr("r", index, 1) > self.rpm:
                self._incr("r", index, -1)
                self._wait(remaining)
                continue
            return

    def record_tokens(self, tokens: int) -> None:
        if self.tpm and tokens > 0:
            self._incr("t", self._window()[0], int(tokens))


class ProviderLimiter(AbstractContextManager):
    """Rate limits first, then a concurrency slot, around each request."""

    def __init__(self, semaphore: AbstractContextManager, rate: RateLimiter):
        self.semaphore, self.rate = semaphore, rate

    def __enter__(self):
        if self.rate.active:
            self.rate.before_request()
        return self.semaphore.__enter__()

    def __exit__(self, *exc: object):
        return self.semaphore.__exit__(*exc)


# -- one limiter per provider, shared by the generation and evaluation runners ------------------

def provider_limiter(provider: Any) -> ProviderLimiter:
    """Concurrency (Redis semaphore across workers when Redis is configured, else this process)
    and rate limits for ``provider`` (an ``LLMProvider``)."""
    from service.core.config import get_settings
    from service.generation.limiter import RedisSemaphore

    settings = get_settings()
    url = settings.redis_url or (settings.broker_url
                                 if settings.broker_url.startswith("redis") else "")
    sem: AbstractContextManager[Any]
    if url:
        sem = RedisSemaphore(_redis(url), f"annotune:provider:{provider.id}",
                             provider.max_concurrency, lease_seconds=provider.timeout_s + 5)
    else:
        sem = _local_semaphore(provider.id, provider.max_concurrency)
    return ProviderLimiter(sem, _rate_limiter(provider.id, provider.requests_per_minute,
                                              provider.tokens_per_minute, url))


@lru_cache
def _rate_limiter(provider_id: int, rpm: int | None, tpm: int | None, url: str) -> RateLimiter:
    return RateLimiter(f"annotune:rate:{provider_id}", rpm=rpm, tpm=tpm,
                       redis=_redis(url) if url else None)


@lru_cache
def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url)


@lru_cache
def _local_semaphore(provider_id: int, limit: int) -> AbstractContextManager[Any]:
    from service.generation.limiter import LocalSemaphore

    return LocalSemaphore(limit)
