"""Review benchmark: 1M samples in PostgreSQL, the real app under uvicorn, 50 simulated annotators.

    python bench/review.py                                   # 1M samples, 60 s per phase
    python bench/review.py --samples 5000000 --annotators 100 --db annotune_bench_review5m
                                                             # issue 23.5: load once, then reuse
    python bench/review.py --samples 200000 --phase-seconds 30
    python bench/review.py --pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres --workers 2

What it does:
1. creates a throwaway database next to ``--pg`` (dropped at the end, even on error), migrates it
   with Alembic, and bulk-loads users, API tokens, one project and ``--samples`` samples with
   ``COPY`` (statuses 70% pending / 20% accepted / 7% rejected / 3% needs changes; 60% of them
   assigned round-robin to the annotators; a numeric judge score on each), then ANALYZE;
2. starts the app with ``uvicorn --workers N`` against it;
3. paced phase: each of ``--annotators`` annotators loops ``next sample`` (the review page
   itself, HTML), then with some probability a ``save`` (PATCH with If-Match) and a
   ``decision`` (accept / reject with reason / needs changes) or a ``skip``, and every few
   rounds a filtered ``list`` page; 1-2 s think time with jitter between requests;
4. closed-loop phase: the same mix with no think time, to find the maximum throughput.

``--queries-only`` skips 2-4 and times the status counts, the exact tag filter and the sort
orders straight on the database (median of 5, with the scans of each plan), before and after
VACUUM.

Reports p50/p95/p99 latency per request type (target: p95 < 50 ms in the paced phase) and the
closed-loop requests per second. Samples are loaded without revision rows (reads don't need
them; every write made during the run does create its revision as usual).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIST_QUERIES = [
    "status=pending&assignee={me}",
    "status=accepted&score_min=4",
    "status=pending&status=needs_changes&order=asc",
    "tag=bench-a",
    "sort=-updated_at",
    "reviewer={me}",
]
REASONS = ["factually wrong", "off-topic", "not supported by the source"]


# --------------------------------------------------------------------------- database

def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options every PostgreSQL bench takes: the server (``--pg``) and ``--samples``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default=os.environ.get(
        "ANNOTUNE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--db", help="a named database to load once and reuse (kept afterwards): when "
                    "it already holds the bench project it is migrated to head and reused as it is")
    ap.add_argument("--load-only", action="store_true", help="load the database, then stop")
    return ap


def _admin_engine(pg_url: str):
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    return create_engine(make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT")


def create_database(pg_url: str, prefix: str = "annotune_bench_review",
                    name: str | None = None) -> str:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = name or f"{prefix}_{os.getpid()}"
    engine = _admin_engine(pg_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(pg_url).set(database=name).render_as_string(hide_password=False)


def database_exists(pg_url: str, name: str) -> bool:
    from sqlalchemy import text

    engine = _admin_engine(pg_url)
    with engine.connect() as conn:
        found = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
    engine.dispose()
    return found is not None


def load_world(url: str) -> dict | None:
    """The bench project of a database ``seed`` loaded earlier, with a fresh API token per user
    (only token hashes are stored), or None when it holds no bench project."""
    from sqlalchemy import create_engine, text

    from service.core import security

    engine = create_engine(url)
    with engine.begin() as conn:
        if conn.scalar(text("SELECT to_regclass('projects')")) is None:
            return None
        pid = conn.scalar(text("SELECT min(id) FROM projects WHERE name = 'bench' "
                                "AND description = 'bench loaded'"))
        if pid is None:
            return None
        rows = conn.execute(text("SELECT m.user_id, m.role FROM memberships m JOIN users u "
                                 "ON u.id = m.user_id WHERE m.project_id = :p ORDER BY u.id"),
                            {"p": pid}).all()
        tokens = {}
        now = datetime.now(UTC)
        for uid, _role in rows:
            secret, prefix, digest = security.new_api_token()
            conn.execute(text("INSERT INTO api_tokens (user_id, name, prefix, token_hash, scopes, "
                              "created_at) VALUES (:u, 'bench', :p, :h, '[\"api\"]', :t)"),
                         {"u": uid, "p": prefix, "h": digest, "t": now})
            tokens[uid] = secret
        samples = conn.scalar(text("SELECT reltuples::bigint FROM pg_class WHERE relname = 'samples'"))
    engine.dispose()
    return {"project_id": pid, "lead": next(u for u, r in rows if r == "lead"),
            "annotators": [u for u, r in rows if r != "lead"], "tokens": tokens,
            "load_seconds": 0.0, "index_seconds": 0.0, "reused": True, "samples_estimate": samples}


def open_database(args: argparse.Namespace, *, prefix: str, assigned: float) -> tuple[str, dict]:
    """The bench database and its world: ``--db`` reused when already loaded, else created,
    migrated and loaded by ``seed``."""
    from sqlalchemy.engine import make_url

    from service.core import migrate

    if args.db and database_exists(args.pg, args.db):
        url = make_url(args.pg).set(database=args.db).render_as_string(hide_password=False)
        migrate.upgrade(url)
        world = load_world(url)
        if world is not None and len(world["annotators"]) >= args.annotators:
            print(f"reusing database {args.db} (about {world['samples_estimate']} samples)",
                  flush=True)
            return url, world
    url = create_database(args.pg, prefix=prefix, name=args.db)
    t0 = time.perf_counter()
    migrate.upgrade(url)
    world = seed(url, samples=args.samples, annotators=args.annotators, assigned=assigned)
    print(f"loaded {args.samples} samples: COPY {world['load_seconds']:.1f} s, trigram indexes "
          f"{world['index_seconds']:.1f} s (setup {time.perf_counter() - t0:.1f} s)", flush=True)
    return url, world


def drop_database(pg_url: str, url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    engine = _admin_engine(pg_url)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


def bench_messages(i: int, rng: random.Random) -> list[dict[str, str]]:
    """The review bench's conversation ``i`` (English, a few hundred characters)."""
    return [{"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": f"Question {i}: how does component {i % 997} work?"},
            {"role": "assistant", "content": f"Component {i % 997} reads the manual section "
                                             f"{i % 211} and answers in detail. " * 3}]


def seed(url: str, *, samples: int, annotators: int, seed_value: int = 7,
         messages: Callable[[int, random.Random], list[dict[str, str]]] = bench_messages,
         assigned: float = 0.6) -> dict:
    """Users, tokens, a project and ``samples`` samples, loaded with COPY.

    ``assigned``: the share of samples assigned round-robin to the annotators.
    ``messages(i, rng)`` writes sample ``i``'s conversation; its ``content_hash`` and
    ``search_text`` come from the functions the app's writers use (``service/samples/store.py``).
    The trigram indexes on ``search_text`` are dropped for the COPY and built again after it (the
    statements the migrations run), as a bulk load into an empty table would do.
    """
    import psycopg
    from sqlalchemy.engine import make_url

    from service.core import security
    from service.samples import search, store

    rng = random.Random(seed_value)
    u = make_url(url)
    dsn = f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}" + (
        f" password={u.password}" if u.password else "")
    now = datetime.now(UTC)
    password_hash = security.hash_password("bench-password-123")
    tokens: dict[int, str] = {}
    with psycopg.connect(dsn, autocommit=False) as conn, conn.cursor() as cur:
        user_ids = []
        for i in range(annotators + 1):
            cur.execute("INSERT INTO users (email, name, password_hash, is_admin, is_active, created_at) "
                        "VALUES (%s, %s, %s, false, true, %s) RETURNING id",
                        (f"bench{i}@example.com", f"bench{i}", password_hash, now))
            user_ids.append(cur.fetchone()[0])
        lead, annotator_ids = user_ids[0], user_ids[1:]
        cur.execute("INSERT INTO projects (name, description, settings, created_by_id, created_at, updated_at) "
                    "VALUES ('bench', '', %s, %s, %s, %s) RETURNING id",
                    (orjson.dumps({"target_accepted": samples // 2}).decode(), lead, now, now))
        project_id = cur.fetchone()[0]
        for uid in user_ids:
            role = "lead" if uid == lead else "annotator"
            cur.execute("INSERT INTO memberships (project_id, user_id, role, created_at) VALUES (%s, %s, %s, %s)",
                        (project_id, uid, role, now))
            secret, prefix, digest = security.new_api_token()
            cur.execute("INSERT INTO api_tokens (user_id, name, prefix, token_hash, scopes, created_at) "
                        "VALUES (%s, 'bench', %s, %s, %s, %s)", (uid, prefix, digest, '["api"]', now))
            tokens[uid] = secret
        cols = ("project_id, messages, status, version, content_hash, search_text, source, provenance, "
                "tags, scores, assignee_id, reviewed_by_id, created_at, updated_at")
        conn.commit()
        cur.execute(f"DROP INDEX IF EXISTS {search.PG_INDEX}")
        cur.execute(f"DROP INDEX IF EXISTS {search.PG_PHRASE_INDEX}")
        start = time.perf_counter()
        with cur.copy(f"COPY samples ({cols}) FROM STDIN") as copy:
            for i in range(samples):
                r = rng.random()
                status = ("pending" if r < 0.70 else "accepted" if r < 0.90
                          else "rejected" if r < 0.97 else "needs_changes")
                assignee = annotator_ids[i % len(annotator_ids)] if rng.random() < assigned else None
                reviewer = annotator_ids[rng.randrange(len(annotator_ids))] if status != "pending" else None
                msgs = messages(i, rng)
                tags = ["bench-a"] if i % 50 == 0 else []
                copy.write_row((project_id, orjson.dumps(msgs).decode(), status, 1,
                                store.content_hash(msgs), search.search_text(msgs), "import", "{}",
                                orjson.dumps(tags).decode(),
                                orjson.dumps({"judge": rng.randint(1, 5)}).decode(),
                                assignee, reviewer, now, now))
        conn.commit()
        load_s = time.perf_counter() - start
        t0 = time.perf_counter()
        cur.execute("SET maintenance_work_mem = '512MB'")
        for statement in (search.PG_DDL[1], *search.PG_PHRASE_DDL):  # as the migrations do
            cur.execute(statement)
        conn.commit()
        index_s = time.perf_counter() - t0
        cur.execute("ANALYZE")
        cur.execute("UPDATE projects SET description = 'bench loaded' WHERE id = %s", (project_id,))
        conn.commit()  # what load_world looks for: a load cut short is loaded again
    return {"project_id": project_id, "lead": lead, "annotators": annotator_ids, "tokens": tokens,
            "load_seconds": load_s, "index_seconds": index_s}


# --------------------------------------------------------------------------- queries alone

QUERIES = {
    # the project page / progress dashboard: status counts (GROUP BY over the whole project)
    "status counts (GROUP BY)":
        "SELECT status, count(*) FROM samples WHERE project_id = {pid} GROUP BY status",
    "status counts (one index-only count per status)":
        "SELECT s.status, (SELECT count(*) FROM samples x WHERE x.project_id = {pid} AND x.status = s.status) "
        "FROM (VALUES ('pending'), ('accepted'), ('rejected'), ('needs_changes')) AS s(status)",
    # what the project page reads since migration 0019: the counters the triggers keep
    "status counts (project_sample_counts)":
        "SELECT status, sum(n) FROM project_sample_counts WHERE project_id = {pid} GROUP BY status",
    # list pages: exact tag filter on the GIN index, and the sort orders (first page of 50)
    "list tag=bench-a (@>)":
        "SELECT id FROM samples WHERE project_id = {pid} AND tags @> '[\"bench-a\"]' ORDER BY id LIMIT 51",
    "list sort=-id": "SELECT id FROM samples WHERE project_id = {pid} ORDER BY id DESC LIMIT 51",
    "list sort=-updated_at":
        "SELECT id FROM samples WHERE project_id = {pid} ORDER BY updated_at DESC, id DESC LIMIT 51",
    "list sort=-updated_at, 2nd page":
        "SELECT id FROM samples WHERE project_id = {pid} AND (updated_at, id) < "
        "((SELECT max(updated_at) FROM samples), 500000) ORDER BY updated_at DESC, id DESC LIMIT 51",
}


def time_queries(url: str, pid: int, *, repeat: int = 5) -> list[tuple[str, float, str]]:
    """Median wall time of each query in ``QUERIES`` and the top line of its plan."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    out = []
    with engine.connect() as conn:
        for name, sql in QUERIES.items():
            q = text(sql.format(pid=pid))
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                conn.execute(q).all()
                times.append((time.perf_counter() - t0) * 1000)
            plan = [r[0] for r in conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql.format(pid=pid)))]
            scans = "; ".join(line.strip() for line in plan if "Scan" in line)[:160]
            out.append((name, sorted(times)[len(times) // 2], scans))
    engine.dispose()
    return out


def queries_report(title: str, rows: list[tuple[str, float, str]]) -> str:
    lines = [f"### {title}", "", "| query | median ms | scans |", "| --- | ---: | --- |"]
    lines += [f"| {name} | {ms:.1f} | {scans} |" for name, ms, scans in rows]
    return "\n".join(lines) + "\n"


def run_queries_only(url: str, world: dict) -> None:
    """Time the list and count queries straight on the database: right after the COPY (as a
    bulk import leaves it: no visibility map yet), and after VACUUM (what autovacuum gives a
    settled table, and what lets the (project_id, status, id) index answer counts alone)."""
    from sqlalchemy import create_engine, text

    pid = world["project_id"]
    print(queries_report("after COPY + ANALYZE", time_queries(url, pid)), flush=True)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM (ANALYZE) samples"))
    engine.dispose()
    print(queries_report("after VACUUM (ANALYZE)", time_queries(url, pid)), flush=True)


# --------------------------------------------------------------------------- server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int, workers: int) -> subprocess.Popen:
    env = dict(os.environ, ANNOTUNE_DATABASE_URL=url, ANNOTUNE_ENVIRONMENT="development",
               ANNOTUNE_LOG_LEVEL="WARNING", ANNOTUNE_BROKER_URL="memory://",
               ANNOTUNE_DATA_DIR=str(Path("/tmp") / f"annotune-bench-{os.getpid()}"))
    cmd = [sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("uvicorn exited")
        time.sleep(0.3)
    raise RuntimeError("server did not come up")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


# --------------------------------------------------------------------------- load

class Stats:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = defaultdict(list)
        self.codes: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, kind: str, ms: float, code: int) -> None:
        self.lat[kind].append(ms)
        self.codes[kind][code] += 1

    def total(self) -> int:
        return sum(len(v) for v in self.lat.values())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


SAMPLE_RE = re.compile(r'data-sample="(\d+)"')
VERSION_RE = re.compile(r'id="version">(\d+)<')


async def annotator(client, base: str, pid: int, uid: int, token: str, stats: Stats, until: float,
                    think: bool, rng: random.Random) -> None:
    headers = {"Authorization": f"Bearer {token}"}

    async def call(kind: str, method: str, path: str, **kw):
        t0 = time.perf_counter()
        resp = await client.request(method, base + path, headers={**headers, **kw.pop("headers", {})}, **kw)
        if time.monotonic() < until:
            stats.add(kind, (time.perf_counter() - t0) * 1000, resp.status_code)
        return resp

    async def pause():
        if think:
            await asyncio.sleep(rng.uniform(1.0, 2.0))

    rounds = 0
    if think:
        await asyncio.sleep(rng.uniform(0, 2.0))  # don't start in lockstep
    while time.monotonic() < until:
        rounds += 1
        page = await call("next (review page)", "GET", f"/projects/{pid}/review")
        m = SAMPLE_RE.search(page.text)
        await pause()
        if m:
            sid = int(m.group(1))
            version = int(VERSION_RE.search(page.text).group(1))
            r = rng.random()
            if r < 0.3:
                body = {"messages": [{"role": "user", "content": f"Edited question {sid}?"},
                                     {"role": "assistant", "content": f"Edited answer {sid} ({rounds})."}]}
                resp = await call("save (PATCH)", "PATCH", f"/api/v1/projects/{pid}/samples/{sid}",
                                  json=body, headers={"If-Match": f'"{version}"'})
                if resp.status_code == 200:
                    version = resp.json()["version"]
                await pause()
            if r < 0.9:
                d = rng.random()
                decision = "accepted" if d < 0.7 else "rejected" if d < 0.85 else "needs_changes"
                await call("decision", "POST", f"/api/v1/projects/{pid}/review/samples/{sid}/decision",
                           json={"decision": decision, "version": version,
                                 "reason": rng.choice(REASONS) if decision == "rejected" else None})
            else:
                await call("skip", "POST", f"/api/v1/projects/{pid}/review/samples/{sid}/skip")
            await pause()
        if rounds % 3 == 0:
            q = rng.choice(LIST_QUERIES).format(me=uid)
            await call("list (filtered page)", "GET", f"/projects/{pid}/samples?{q}")
            await pause()
        if rounds % 5 == 0:  # the project page: its status counts come from the counters
            await call("project page (counts)", "GET", f"/projects/{pid}")
            await pause()


async def run_phase(base: str, world: dict, *, seconds: float, think: bool, annotators: int) -> tuple[Stats, float]:
    import httpx

    stats = Stats()
    limits = httpx.Limits(max_connections=annotators * 2, max_keepalive_connections=annotators * 2)
    until = time.monotonic() + seconds
    start = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=30) as shared:
        tasks = []
        for i, uid in enumerate(world["annotators"][:annotators]):
            # one client per annotator so each keeps its own cookies (the skip list)
            client = httpx.AsyncClient(limits=httpx.Limits(max_connections=2), timeout=30)
            tasks.append((client, asyncio.create_task(annotator(
                client, base, world["project_id"], uid, world["tokens"][uid], stats, until, think,
                random.Random(i)))))
        for client, task in tasks:
            await task
            await client.aclose()
        del shared
    return stats, time.perf_counter() - start


def report(title: str, stats: Stats, elapsed: float) -> str:
    lines = [f"### {title}", "", "| request | n | p50 ms | p95 ms | p99 ms | statuses |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for kind in sorted(stats.lat):
        v = stats.lat[kind]
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(stats.codes[kind].items()))
        lines.append(f"| {kind} | {len(v)} | {pct(v, 50):.1f} | {pct(v, 95):.1f} | {pct(v, 99):.1f} | {codes} |")
    total = stats.total()
    lines += ["", f"{total} requests in {elapsed:.1f} s = **{total / elapsed:.0f} requests/s**", ""]
    return "\n".join(lines)


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--phase-seconds", type=float, default=60)
    ap.add_argument("--keep", action="store_true", help="keep the database (for EXPLAIN afterwards)")
    ap.add_argument("--queries-only", action="store_true",
                    help="no server, no load: time the count/list/tag/sort queries on the data")
    args = ap.parse_args()

    url, world = open_database(args, prefix="annotune_bench_review", assigned=0.6)
    proc = None
    try:
        if args.load_only:
            return
        if args.queries_only:
            run_queries_only(url, world)
            return
        port = free_port()
        proc = start_server(url, port, args.workers)
        base = f"http://127.0.0.1:{port}"
        out = [f"command: `{' '.join(shlex.quote(a) for a in ['python', 'bench/review.py', *sys.argv[1:]])}`",
               (f"samples: {args.samples}, annotators: {args.annotators}, "
                f"uvicorn workers: {args.workers}, CPUs: {os.cpu_count()}"), ""]
        load_start = os.getloadavg()
        # warm-up (not reported): templates compiled, connection pools filled, caches hot
        asyncio.run(run_phase(base, world, seconds=min(10.0, args.phase_seconds), think=False,
                              annotators=args.annotators))
        stats, elapsed = asyncio.run(run_phase(base, world, seconds=args.phase_seconds, think=True,
                                               annotators=args.annotators))
        out.append(report(f"Paced: {args.annotators} annotators, 1-2 s think time, {args.phase_seconds:.0f} s", stats, elapsed))
        load_paced = os.getloadavg()
        print(out[-1], flush=True)
        stats, elapsed = asyncio.run(run_phase(base, world, seconds=args.phase_seconds, think=False,
                                               annotators=args.annotators))
        out.append(report(f"Closed loop: {args.annotators} annotators, no think time, {args.phase_seconds:.0f} s", stats, elapsed))
        print(out[-1], flush=True)
        out[2] = (f"load average (1, 5, 15 min) at the start: {load_start}, after the paced "
                  f"phase: {load_paced}, at the end: {os.getloadavg()}")
        print("\n".join(out[:3]))
    finally:
        if proc is not None:
            stop_server(proc)
        if not (args.keep or args.db):
            drop_database(args.pg, url)
        else:
            print(f"kept database {url}")


if __name__ == "__main__":
    main()
