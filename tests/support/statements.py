"""The SQL statements the app's engine sends while a block runs (one line each, whitespace
collapsed): for tests that pin round trips or transactions."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from service.core.db import get_engine

TRANSACTION = ("BEGIN", "COMMIT", "ROLLBACK")


@contextmanager
def statements(*, transactions: bool = False) -> Iterator[list[str]]:
    """Yield the list the statements go to; ``transactions``: BEGIN/COMMIT/ROLLBACK too."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        if transactions or statement.split(None, 1)[0].upper() not in TRANSACTION:
            seen.append(" ".join(statement.split()))

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
