"""Shared review queue benchmark (issue 17): many annotators on one queue, no assignment.

    python bench/review_queue.py                              # 1M samples, 50 annotators, 300 s
    python bench/review_queue.py --samples 100000 --seconds 60
    python bench/review_queue.py --keep                       # keep the database afterwards

What it does:
1. a throwaway PostgreSQL database migrated with Alembic and loaded by bench/review.py's loader
   (``COPY``; 70% of the samples pending, none assigned: every annotator draws from the one
   shared queue), then ANALYZE;
2. the app under uvicorn (``--workers``), and ``--annotators`` annotators, each with its own API
   token and HTTP client, in a closed loop for ``--seconds``: claim (``GET .../review/next``,
   which leases the sample it hands out) then decide (``POST .../review/samples/{id}/decision``
   with the version it was handed: 70% accept, 15% reject with a reason, 15% needs changes), no
   think time, so the numbers are what the server sustains;
3. checks in the database: decisions recorded == decisions answered 200, no sample decided
   twice, leases left.

Reports p50/p95/p99 of claim and decide, decisions per second, distinct samples decided, and
the share of 409 conflicts (target: distinct == decisions, 409 < 1%).
"""
from __future__ import annotations

import asyncio
import os
import random
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import review as review_bench

REASONS = ["factually wrong", "off-topic", "not supported by the source"]


async def annotator(base: str, pid: int, token: str, stats: review_bench.Stats, until: float,
                    decided: list[int], rng: random.Random) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        while time.monotonic() < until:
            t0 = time.perf_counter()
            resp = await client.get(f"/api/v1/projects/{pid}/review/next")
            stats.add("claim (GET next)", (time.perf_counter() - t0) * 1000, resp.status_code)
            sample = resp.json().get("sample") if resp.status_code == 200 else None
            if sample is None:
                await asyncio.sleep(0.2)
                continue
            d = rng.random()
            decision = "accepted" if d < 0.7 else "rejected" if d < 0.85 else "needs_changes"
            t0 = time.perf_counter()
            resp = await client.post(
                f"/api/v1/projects/{pid}/review/samples/{sample['id']}/decision",
                json={"decision": decision, "version": sample["version"],
                      "reason": rng.choice(REASONS) if decision == "rejected" else None})
            stats.add("decide (POST decision)", (time.perf_counter() - t0) * 1000, resp.status_code)
            if resp.status_code == 200:
                decided.append(sample["id"])


async def run(base: str, world: dict, *, seconds: float, annotators: int):
    stats = review_bench.Stats()
    decided: list[int] = []
    until = time.monotonic() + seconds
    start = time.perf_counter()
    await asyncio.gather(*(
        annotator(base, world["project_id"], world["tokens"][uid], stats, until, decided,
                  random.Random(i))
        for i, uid in enumerate(world["annotators"][:annotators])))
    return stats, decided, time.perf_counter() - start


def cpu_seconds(server) -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process (the load generator), the app
    (uvicorn and its workers) and every PostgreSQL process: where the machine's time goes."""
    import psutil

    def used(procs) -> float:
        total = 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    with open("/proc/stat") as f:  # the whole machine: busy = everything but idle and iowait
        ticks = [int(x) for x in f.readline().split()[1:]]
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    app = psutil.Process(server.pid)
    postgres = [q for q in psutil.process_iter(["name"]) if q.info["name"] in ("postgres",
                                                                                 "postmaster")]
    return {"load generator": used([psutil.Process()]),
            "app (uvicorn)": used([app, *app.children(recursive=True)]),
            "PostgreSQL": used(postgres), "machine busy": busy}


def db_checks(url: str, pid: int, since) -> dict:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        decisions = conn.scalar(text("SELECT count(*) FROM review_decisions d JOIN samples s "
                                     "ON s.id = d.sample_id WHERE s.project_id = :p "
                                     "AND d.created_at >= :t"), {"p": pid, "t": since})
        twice = conn.scalar(text("SELECT count(*) FROM (SELECT d.sample_id FROM review_decisions d "
                                 "JOIN samples s ON s.id = d.sample_id WHERE s.project_id = :p "
                                 "GROUP BY d.sample_id HAVING count(*) > 1) x"), {"p": pid})
        leases = conn.scalar(text("SELECT count(*) FROM review_leases WHERE project_id = :p"),
                             {"p": pid})
    engine.dispose()
    return {"decisions": decisions, "decided_twice": twice, "leases_left": leases}


def report(stats: review_bench.Stats, decided: list[int], elapsed: float, checks: dict,
           annotators: int) -> str:
    lines = [review_bench.report(f"Shared queue: {annotators} annotators, no assignment, "
                                 f"no think time, {elapsed:.0f} s", stats, elapsed)]
    codes = stats.codes["decide (POST decision)"]
    answered = sum(codes.values())
    conflicts = codes.get(409, 0)
    lines += [
        (f"- decisions answered 200: {len(decided)} = **{len(decided) / elapsed:.1f} decisions/s**; "
        f"distinct samples decided: {len(set(decided))}"),
        (f"- 409 conflicts: {conflicts} of {answered} decisions "
        f"({100 * conflicts / max(answered, 1):.2f}%)"),
        (f"- in the database: {checks['decisions']} decisions recorded during the run, "
        f"{checks['decided_twice']} samples decided more than once, "
        f"{checks['leases_left']} leases left (annotators stopped mid-claim)"),
        ""]
    return "\n".join(lines)


def main() -> None:
    ap = review_bench.arguments(__doc__)
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()

    from datetime import UTC, datetime

    url, world = review_bench.open_database(args, prefix="annotune_bench_queue", assigned=0.0)
    proc = None
    try:
        if args.load_only:
            return
        port = review_bench.free_port()
        proc = review_bench.start_server(url, port, args.workers)
        base = f"http://127.0.0.1:{port}"
        # warm-up (not reported): connection pools, first plans
        asyncio.run(run(base, world, seconds=5, annotators=args.annotators))
        since = datetime.now(UTC)
        load = [os.getloadavg()]
        cpu = [cpu_seconds(proc)]
        stats, decided, elapsed = asyncio.run(run(base, world, seconds=args.seconds,
                                                  annotators=args.annotators))
        load.append(os.getloadavg())
        cpu.append(cpu_seconds(proc))
        checks = db_checks(url, world["project_id"], since)
        cmd = " ".join(shlex.quote(a) for a in ["python", "bench/review_queue.py", *sys.argv[1:]])
        print(f"command: `{cmd}`\nsamples: {args.samples}, annotators: {args.annotators}, uvicorn "
              f"workers: {args.workers}, CPUs: {os.cpu_count()}; load average (1, 5, 15 min) "
              f"before: {load[0]}, after: {load[1]}\n")
        print(report(stats, decided, elapsed, checks, args.annotators), flush=True)
        per = {k: cpu[1][k] - cpu[0][k] for k in cpu[0]}
        mine = ("load generator", "app (uvicorn)", "PostgreSQL")
        per["other processes"] = per["machine busy"] - sum(per[k] for k in mine)
        cpus = os.cpu_count() or 1
        print(f"CPU seconds during the run (of {elapsed * cpus:.0f} available on {cpus} CPUs): "
              + ", ".join(f"{k} {v:.0f} s ({1000 * v / max(len(decided), 1):.1f} ms per decision)"
                          for k, v in per.items()), flush=True)
    finally:
        if proc is not None:
            review_bench.stop_server(proc)
        if args.keep or args.db:
            print(f"kept database {url}")
        else:
            review_bench.drop_database(args.pg, url)


if __name__ == "__main__":
    main()
