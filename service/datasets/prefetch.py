"""Fetching the next batch of a database cursor in a thread while this one is worked on.

The database's work (index scan, rendering, network) and psycopg's waiting happen while the
caller's Python code runs: builds and exports overlap their PostgreSQL I/O with their own work.
Bounded: at most ``depth`` batches wait in memory.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def prefetched(fetch: Callable[[], list[Any]], convert: Callable[[list[Any]], T],
               depth: int = 2) -> Iterator[T]:
    """``convert(rows)`` for every non-empty ``fetch()``, fetched (and converted) one thread
    ahead. An error in the thread is raised here; closing the iterator stops the thread."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            while not stop.is_set():
                rows = fetch()
                if not rows:
                    break
                q.put(convert(rows))
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            q.put(exc)

    worker = threading.Thread(target=produce, name="db-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue, then wait for it
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            worker.join(timeout=0.05)
