"""Concurrency limits for LLM calls shared by every worker process and machine.

:class:`RedisSemaphore` is a counting semaphore kept in one Redis sorted set: each holder adds a
random token scored with its lease expiry (Redis server time, so clocks of the workers do not
matter). Acquiring runs one Lua script that first drops expired tokens, then adds ours if fewer
than ``limit`` remain, atomically. A worker killed while holding a slot cannot leak it: its token
expires after ``lease_seconds`` and the next acquire reclaims it. ``lease_seconds`` must
therefore exceed the longest time a slot is held (an LLM call's timeout plus a margin), or call
:meth:`RedisSemaphore.renew` while holding it.

:class:`LocalSemaphore` has the same interface within one process, for the embedded default
where no Redis runs.

Usage (the same object may be shared by many threads)::

    sem = RedisSemaphore(redis.Redis.from_url(url), "annotune:llm:provider:7", limit=8,
                         lease_seconds=120)
    with sem:
        call_the_model()
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["LimiterTimeout", "LocalSemaphore", "RedisSemaphore"]


class LimiterTimeout(TimeoutError):
    """No slot became free within the timeout."""


# KEYS[1] = sorted set; ARGV = token, limit, lease_ms. Returns {acquired (0/1), holders}.
_ACQUIRE_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local key = KEYS[1]
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
local holders = redis.call('ZCARD', key)
if holders < limit then
  redis.call('ZADD', key, now_ms + lease_ms, ARGV[1])
  if redis.call('PTTL', key) < lease_ms + 1000 then
    redis.call('PEXPIRE', key, lease_ms + 1000)
  end
  return {1, holders + 1}
end
return {0, holders}
"""

# KEYS[1] = sorted set; ARGV = token, lease_ms. 1 when the token still held its slot.
_RENEW_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local key = KEYS[1]
local lease_ms = tonumber(ARGV[2])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', key, ARGV[1])
if (not score) or tonumber(score) <= now_ms then
  return 0
end
redis.call('ZADD', key, 'XX', now_ms + lease_ms, ARGV[1])
if redis.call('PTTL', key) < lease_ms + 1000 then
  redis.call('PEXPIRE', key, lease_ms + 1000)
end
return 1
"""

# KEYS[1] = sorted set. Number of live holders.
_COUNT_LUA = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
return redis.call('ZCARD', KEYS[1])
"""


class _ThreadSlots:
    """Tokens taken through ``with sem:``, per thread (a semaphore is shared by threads)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def push(self, token: Any) -> None:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(token)

    def pop(self) -> Any:
        return self._local.stack.pop()


class RedisSemaphore:
    """At most ``limit`` holders of ``key`` at once, across processes and machines."""

    def __init__(
        self,
        redis_client: Any,
        key: str,
        limit: int,
        lease_seconds: float = 120.0,
        *,
        timeout: float | None = None,
        poll_min: float = 0.002,
        poll_max: float = 0.05,
    ):
        """``timeout``: how long ``with sem:`` waits before :class:`LimiterTimeout` (``None``:
        forever). ``poll_min``/``poll_max``: the waiting loop's sleep grows from one to the
        other (with jitter) while no slot is free."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.redis = redis_client
        self.key = key
        self.limit = int(limit)
        self.lease_seconds = float(lease_seconds)
        self.timeout = timeout
        self.poll_min = poll_min
        self.poll_max = max(poll_max, poll_min)
        self._acquire = redis_client.register_script(_ACQUIRE_LUA)
        self._renew = redis_client.register_script(_RENEW_LUA)
        self._count = redis_client.register_script(_COUNT_LUA)
        self._slots = _ThreadSlots()
        self._prefix = f"{socket.gethostname()}:{os.getpid()}:"

    def __repr__(self) -> str:
        return (
            f"RedisSemaphore(key={self.key!r}, limit={self.limit}, lease={self.lease_seconds:g}s)"
        )

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease_seconds * 1000))

    def try_acquire(self) -> str | None:
        """One atomic attempt: a token when a slot was free, else ``None``. Redis unreachable
        (restarting) counts as no free slot: callers keep polling with back-off until it is
        back or their timeout passes, rather than failing the work."""
        import redis

        token = self._prefix + uuid.uuid4().hex
        try:
            acquired, _ = self._acquire(keys=[self.key], args=[token, self.limit, self._lease_ms])
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("limiter %s: Redis unreachable (%s); waiting for it", self.key, exc)
            return None
        return token if int(acquired) == 1 else None

    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> str | None:
        """Take a slot; returns its token, or ``None`` if none was free in time.

        Waits with short sleeps that grow from ``poll_min`` to ``poll_max`` (full jitter).
        ``timeout=None`` waits forever (when ``blocking``).
        """
        token = self.try_acquire()
        if token is not None or not blocking:
            return token
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.poll_min
        while True:
            pause = random.uniform(self.poll_min, delay)
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                pause = min(pause, left)
            time.sleep(pause)
            token = self.try_acquire()
            if token is not None:
                return token
            delay = min(self.poll_max, delay * 2)

    def release(self, token: str) -> bool:
        """Give the slot back; ``False`` if the lease had already expired (and was reclaimed), or
        Redis is unreachable (the slot's lease then expires on its own)."""
        import redis

        try:
            return bool(self.redis.zrem(self.key, token))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("limiter %s: could not release a slot (%s); its lease expires", self.key,
                        exc)
            return False

    def renew(self, token: str, lease_seconds: float | None = None) -> bool:
        """Extend a held slot's lease from now; ``False`` if it expired meanwhile."""
        lease_ms = self._lease_ms if lease_seconds is None else max(1, int(lease_seconds * 1000))
        return bool(int(self._renew(keys=[self.key], args=[token, lease_ms])))

    def holders(self) -> int:
        """Live holders now (expired leases dropped first)."""
        return int(self._count(keys=[self.key]))

    def __enter__(self) -> str:
        token = self.acquire(timeout=self.timeout)
        if token is None:
            raise LimiterTimeout(
                f"no free slot on {self.key!r} (limit {self.limit}) within {self.timeout} s"
            )
        self._slots.push(token)
        return token

    def __exit__(self, *exc_info: object) -> None:
        self.release(self._slots.pop())


class LocalSemaphore:
    """The same interface as :class:`RedisSemaphore` within one process (no Redis)."""

    def __init__(self, limit: int, *, timeout: float | None = None):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = int(limit)
        self.timeout = timeout
        self._sem = threading.BoundedSemaphore(self.limit)
        self._held = 0
        self._lock = threading.Lock()
        self._slots = _ThreadSlots()

    def try_acquire(self) -> str | None:
        return self.acquire(blocking=False)

    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> str | None:
        if not self._sem.acquire(blocking, timeout if blocking else None):
            return None
        with self._lock:
            self._held += 1
        return uuid.uuid4().hex

    def release(self, token: str) -> bool:
        with self._lock:
            self._held -= 1
        self._sem.release()
        return True

    def renew(self, token: str, lease_seconds: float | None = None) -> bool:
        return True

    def holders(self) -> int:
        return self._held

    def __enter__(self) -> str:
        token = self.acquire(timeout=self.timeout)
        if token is None:
            raise LimiterTimeout(f"no free slot (limit {self.limit}) within {self.timeout} s")
        self._slots.push(token)
        return token

    def __exit__(self, *exc_info: object) -> None:
        self.release(self._slots.pop())
