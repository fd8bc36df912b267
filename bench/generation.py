"""Generation throughput: N units through chat() at a fixed concurrency, against a local fake
OpenAI server with fixed latency, with the Redis limiter in the loop.

The ideal wall time is ``units * latency / concurrency``; the ratio to it measures what the
client, the limiter and the threads add. Target: <= 1.15x.

    .venv/bin/python -m bench.generation --units 2000 --latency 0.1 --concurrency 32 --write-docs

The fake server runs in its own process (``python -m tests.support.openai_server``) so that its
CPU time does not share the benchmark's GIL; Redis must run at ``--redis-url``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.generation import llm
from service.generation.limiter import RedisSemaphore

DOCS = ROOT / "docs" / "benchmarks.md"


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.openai_server",
            "--latency",
            str(latency),
            "--no-record",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def server_stats(url: str) -> dict[str, int]:
    root = url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/_stats", timeout=5) as resp:
        return json.load(resp)


def _drive(
    units: range, threads: int, url: str, concurrency: int, redis_url: str | None, key: str, wait_go
) -> tuple[list[float], list[str]]:
    """Run ``units`` through chat() on ``threads`` threads; ``wait_go()`` is the start signal."""
    settings = llm.ProviderSettings(
        base_url=url, model="fake-model", api_key="bench-key", timeout=30, max_retries=2
    )
    limiter = None
    if redis_url:
        import redis

        limiter = RedisSemaphore(
            redis.Redis.from_url(redis_url), key, limit=concurrency, lease_seconds=60
        )
    work: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    for i in units:
        work.put(i)
    for _ in range(threads):
        work.put(None)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)

    def worker() -> None:
        local: list[float] = []
        ready.wait()
        while (unit := work.get()) is not None:
            try:
                result = llm.chat(
                    settings,
                    [{"role": "user", "content": f"unit {unit}: write one question"}],
                    params={"temperature": 0.7, "max_tokens": 64},
                    limiter=limiter,
                )
                local.append(result.elapsed_s)
            except Exception as exc:  # noqa: BLE001 - counted
                with lock:
                    errors.append(repr(exc))
        with lock:
            latencies.extend(local)

    # Warm the client (imports, first connection) outside the timed region.
    llm.chat(settings, [{"role": "user", "content": "warm-up"}])
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    wait_go()
    ready.wait()
    for t in pool:
        t.join()
    return latencies, errors


def _child(units, threads, url, concurrency, redis_url, key, ready, go, results) -> None:
    def wait_go() -> None:
        ready.put(os.getpid())
        go.wait(60)

    latencies, errors = _drive(units, threads, url, concurrency, redis_url, key, wait_go)
    results.put((latencies, errors))


def run(
    units: int,
    latency: float,
    concurrency: int,
    threads: int,
    redis_url: str | None,
    url: str,
    processes: int = 1,
) -> dict[str, float | int | str | None]:
    key = f"annotune-bench:generation:{uuid.uuid4().hex}"
    if processes == 1:
        clock: dict[str, float] = {}
        latencies, errors = _drive(
            range(units),
            threads,
            url,
            concurrency,
            redis_url,
            key,
            lambda: clock.setdefault("t0", time.perf_counter()),
        )
        wall = time.perf_counter() - clock["t0"]
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
        procs = [
            ctx.Process(
                target=_child,
                args=(
                    range(p, units, processes),
                    threads // processes,
                    url,
                    concurrency,
                    redis_url,
                    key,
                    ready,
                    go,
                    results,
                ),
            )
            for p in range(processes)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=120)
        t0 = time.perf_counter()
        go.set()
        latencies, errors = [], []
        for _ in procs:
            lat, err = results.get(timeout=600)
            latencies.extend(lat)
            errors.extend(err)
        wall = time.perf_counter() - t0
        for p in procs:
            p.join(timeout=30)
    if redis_url:
        import redis

        redis.Redis.from_url(redis_url).delete(key)

    ideal = units * latency / concurrency
    lat_sorted = sorted(latencies)
    return {
        "units": units,
        "latency_s": latency,
        "concurrency": concurrency,
        "processes": processes,
        "threads": threads,
        "limiter": "redis" if redis_url else "none",
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(wall / ideal, 3),
        "throughput_per_s": round(units / wall, 1),
        "call_p50_ms": round(1000 * statistics.median(lat_sorted), 1) if lat_sorted else None,
        "call_p99_ms": round(1000 * lat_sorted[int(0.99 * (len(lat_sorted) - 1))], 1)
        if lat_sorted
        else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def write_docs(results: list[dict], command: str) -> None:
    lines = [
        "## Generation",
        "",
        "`service.generation.llm.chat()` with the `RedisSemaphore` limiter, many threads, against",
        "the local fake OpenAI server (`tests/support/openai_server.py`, own process) answering",
        "every chat request after a fixed latency. Ideal wall time = units x latency /",
        "concurrency; target ratio <= 1.15.",
        "",
        (
            f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, Redis limiter at 127.0.0.1:6379; load average "
            f"{os.getloadavg()[0]:.2f} when the runs ended."
        ),
        "",
        "```",
        command,
        "```",
        "",
        (
            "| units | latency | concurrency | processes x threads | limiter | wall (s) "
            "| ideal (s) | ratio | units/s | call p50 (ms) | call p99 (ms) "
            "| max in flight (server) | errors |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['units']} | {int(r['latency_s'] * 1000)} ms | {r['concurrency']} | "
            f"{r['processes']} x {r['threads'] // r['processes']} | {r['limiter']} | {r['wall_s']} | {r['ideal_s']} | "
            f"**{r['ratio']}** | {r['throughput_per_s']} | {r['call_p50_ms']} | "
            f"{r['call_p99_ms']} | {r['max_in_flight']} | {r['errors']} |"
        )
    lines += [
        "",
        "Ratio = wall / ideal. The client's CPU (the `openai` client is ~2 ms of CPU per call, the",
        "limiter ~0.15 ms for its acquire + release round trips) queues behind the GIL at ~300",
        "calls/s, which is what the ratio above 1 measures; on a 2-CPU machine shared with other",
        "jobs, runs vary by about +-0.05. The fake server sets `TCP_NODELAY`: without it every",
        "response waited for a delayed ACK (~40 ms) and the ratio was 1.56.",
        "",
    ]
    section = "\n".join(lines)
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n\n"
    pattern = re.compile(r"^## Generation\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1, help="server latency, seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="the limiter's limit")
    parser.add_argument(
        "--threads", type=int, default=None, help="worker threads in all (default: = concurrency)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        nargs="*",
        default=[1],
        help="worker processes sharing the threads and the Redis limit; several "
        "values run several configurations",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--no-limiter", action="store_true")
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help="write the results under '## Generation' in docs/benchmarks.md",
    )
    args = parser.parse_args(argv)

    proc, url = start_server(args.latency)
    results = []
    try:
        threads = args.threads or args.concurrency
        for processes in args.processes:
            urllib.request.urlopen(url.rsplit("/v1", 1)[0] + "/_reset", data=b"", timeout=5).read()
            result = run(
                args.units,
                args.latency,
                args.concurrency,
                threads,
                None if args.no_limiter else args.redis_url,
                url,
                processes,
            )
            result["max_in_flight"] = server_stats(url)["max_in_flight"]
            results.append(result)
            print(json.dumps(result), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if args.write_docs:
        command = ".venv/bin/python -m bench.generation " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:])
        )
        write_docs(results, command)
    worst = max(r["ratio"] for r in results)
    return 0 if worst <= 1.15 and all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
