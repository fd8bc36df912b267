"""A part of a version build's freeze loop in a child process (``build.freeze`` with shards).

The freeze loop is Python per sample (JSON parse, gate, hashes, leakage text) and runs on one
core; PostgreSQL's read and COPY leave the other mostly idle. A child process takes a range
of the selected ids: it reads them in the build's own snapshot (``pg_export_snapshot`` /
``SET TRANSACTION SNAPSHOT``: exactly the rows the parent's selection saw), freezes them with
the same loop (``build._loop``) and sends back, over its stdout, the COPY lines of its items,
its leakage signatures and, at the end, its statistics. The parent writes the lines with its
own COPY, in its one transaction: a failed or cancelled build still leaves nothing behind.

A ``subprocess``, not ``multiprocessing``: a Celery prefork worker's process is daemonic and
may not have children of ``multiprocessing``'s kind. The parent sends the database URL (with
its password) on the child's stdin, never in its arguments or environment.

Frames, both ways: one byte of kind, eight of length (little-endian), the payload.
Parent to child: ``H`` (the header, JSON) then ``A`` (ids, codes, positions as arrays).
Child to parent: ``C`` (COPY lines), ``P`` (samples done so far, a decimal), ``E`` (test ids
and signatures), ``T`` (train records), ``R`` (the statistics, pickled) or ``X`` (an error).
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any

import numpy as np
from sqlalchemy import text

from service.datasets import build, leakage

_HEAD = 9
_SNAPSHOT = re.compile(r"^[0-9A-F]+-[0-9A-F]+(-[0-9A-F]+)?$")


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + len(payload).to_bytes(8, "little") + payload


def _read_frame(stream: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next frame, or None at the end of the stream."""
    head = stream.read(_HEAD)
    if not head:
        return None
    if len(head) < _HEAD:
        raise EOFError("truncated frame")
    size = int.from_bytes(head[1:], "little")
    payload = stream.read(size) if size else b""
    if len(payload) < size:
        raise EOFError("truncated frame")
    return head[:1], payload


def _arrays_bytes(*arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.savez(out, *arrays)
    return out.getvalue()


def _arrays(payload: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


# --- the parent's side ----------------------------------------------------------------------


class Child:
    """A running shard: its process and the thread that reads its frames."""

    def __init__(self, proc: subprocess.Popen[bytes], sink: Any,
                 collector: leakage.Collector) -> None:
        self.proc, self._sink, self._collector = proc, sink, collector
        self.done = 0  # samples the child has frozen (its progress frames)
        self._stop = threading.Event()
        self._stats: build._Stats | None = None
        self._error: str | None = None
        self._reader = threading.Thread(target=self._read, name="build-shard", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while (frame := _read_frame(self.proc.stdout)) is not None:
                kind, payload = frame
                if kind == b"C":
                    self._sink.write_block(payload, self._stop)
                elif kind == b"P":
                    self.done = int(payload)
                elif kind == b"E":
                    ids, sigs = _arrays(payload)
                    self._collector.add_test(ids, sigs)
                elif kind == b"T":
                    self._collector.add_train_records(payload)
                elif kind == b"R":
                    self._stats = pickle.loads(payload)  # our own child's
                elif kind == b"X":
                    self._error = payload.decode("utf-8", "replace")
                if self._stop.is_set():
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by wait()
            self._error = self._error or f"{type(exc).__name__}: {exc}"

    def wait(self, on_progress: Callable[[int | None, int], None] | None) -> build._Stats:
        """The child's statistics once it has sent everything (its items are in the COPY
        queue by then); ``on_progress`` meanwhile, every half second (it may raise: a
        cancelled build stops here too)."""
        while self._reader.is_alive():
            self._reader.join(timeout=0.5)
            if on_progress is not None and self._reader.is_alive():
                on_progress(None, 0)  # the parent's count as it was, the child's as it is
        if self._error is not None and self.proc.poll() is None:
            self.proc.kill()  # its reader gave up (say, the COPY failed): it may be blocked on us
        code = self.proc.wait()
        if self._error is not None or self._stats is None:
            raise ShardFailed(self._error or f"the build's child process exited with {code} "
                                             "before sending its results")
        return self._stats

    def stop(self) -> None:
        """End the child (the build failed or was cancelled) and its reader."""
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join()


class ShardFailed(RuntimeError):
    """A child process of a build failed: the build fails with its message."""


def start(p: build.Pass, version: Any, planned: dict[str, int], leakage_max: int) -> Child:
    """A child freezing ``p``'s ids in ``p.read``'s snapshot (a REPEATABLE READ transaction
    that stays open until the child is done); its items go to ``p.sink``. The child applies
    the version's stored filter (``service.rows_filter``), as the parent does."""
    conn = p.read.connection()
    snapshot = p.read.execute(text("SELECT pg_export_snapshot()")).scalar_one()
    header = {"url": conn.engine.url.render_as_string(hide_password=False),
              "snapshot": snapshot, "version_id": version.id, "project_id": version.project_id,
              "filter": version.filter, "think": p.think, "batch": p.batch,
              "planned": planned, "leakage_max": leakage_max, "tokenizer": p.tok.name}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in sys.path if x))
    proc = subprocess.Popen([sys.executable, "-m", "service.datasets.shard"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    try:
        proc.stdin.write(_frame(b"H", json.dumps(header).encode()))
        proc.stdin.write(_frame(b"A", _arrays_bytes(p.ids, p.codes, p.positions)))
        proc.stdin.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return Child(proc, p.sink, p.collector)


# --- the child's side -----------------------------------------------------------------------


class _Out:
    """The child's frames to its parent, from the loop and from its array thread."""

    copy = True  # the loop writes COPY lines

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream, self._lock = stream, threading.Lock()

    def send(self, kind: bytes, payload: bytes) -> None:
        with self._lock:
            self._stream.write(_frame(kind, payload))

    def write_copy(self, lines: list[bytes]) -> None:
        lines.append(b"")
        self.send(b"C", b"\n".join(lines))


def _run(header: dict[str, Any], ids: np.ndarray, codes: np.ndarray, positions: np.ndarray,
         out: _Out) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import NullPool

    from service.datasets import service
    from service.samples import tokens

    if not _SNAPSHOT.match(header["snapshot"]):
        raise ValueError("not a snapshot id")
    engine = create_engine(header["url"], poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            conn.execute(text(f"SET TRANSACTION SNAPSHOT '{header['snapshot']}'"))
            conn.execute(text("SET TRANSACTION READ ONLY"))
            collector = leakage.Collector(header["planned"], max_samples=header["leakage_max"],
                                          train_out=lambda b: out.send(b"T", b))
            st = build._Stats()
            filtered = service.rows_filter(header["project_id"], header["filter"],
                                          conn.dialect.name)
            p = build.Pass(Session(bind=conn), build.rows_statement(filtered, ids),
                           header["batch"], header["version_id"], header["think"], ids, codes,
                           positions, out, collector, st,
                           tokens.get_tokenizer(header["tokenizer"]),
                           lambda done, _n: out.send(b"P", b"%d" % done), ahead=True)
            build._freeze_rows(p)
            collector.flush()
            for test_ids, sigs in collector.test_parts():
                out.send(b"E", _arrays_bytes(test_ids, sigs))
            out.send(b"R", pickle.dumps(st))
    finally:
        engine.dispose()


def main() -> int:
    # frames go to the real stdout; anything printed goes to stderr
    stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    out = _Out(stream)
    try:
        head = _read_frame(sys.stdin.buffer)
        arrays = _read_frame(sys.stdin.buffer)
        if head is None or arrays is None or head[0] != b"H" or arrays[0] != b"A":
            raise ValueError("expected a header and the arrays on stdin")
        ids, codes, positions = _arrays(arrays[1])
        _run(json.loads(head[1]), ids, codes, positions, out)
        return 0
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        traceback.print_exc(file=sys.stderr)
        out.send(b"X", f"{type(exc).__name__}: {exc}".encode())
        return 1
    finally:
        stream.flush()


if __name__ == "__main__":
    sys.exit(main())
