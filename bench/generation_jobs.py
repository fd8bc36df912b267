"""Generation jobs end to end through the job kit: N units of a keyword job, run by the real
runner (``workers/generation/runner.py``: lease, heartbeat thread, one claim per unit, fenced
writes of samples and counters) against a fake OpenAI server with a fixed latency, on
PostgreSQL with the Redis limiter.

The ideal wall time is ``units * latency / concurrency``; the ratio to it is what the runner, the
database writes and the limiter add on top of the model's own latency. Target: <= 1.05x.

    .venv/bin/python -m bench.generation_jobs --units 1000 --latency 0.1 --concurrency 4 64

Needs PostgreSQL (``--database-url``, a scratch database is created and dropped) and Redis.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    args = parser.parse_args()

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(args.database_url)
    name = f"annotune_bench_gen_{os.getpid()}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    os.environ.update({"ANNOTUNE_DATABASE_URL": url, "ANNOTUNE_REDIS_URL": args.redis_url,
                       "ANNOTUNE_EGRESS_ALLOW": '["127.0.0.1"]', "ANNOTUNE_CELERY_EAGER": "true",
                       "ANNOTUNE_BROKER_URL": "memory://",
                       "ANNOTUNE_DATA_DIR": f"/tmp/{name}"})
    try:
        rows = run(url, args)
    finally:
        from service.core.db import get_engine

        get_engine().dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print("| concurrency | units | latency | wall | ideal | ratio | units/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| {concurrency} | {units} | {latency:.2f} s | {wall:.1f} s | {ideal:.1f} s | "
              "{ratio:.3f}x | {rate:.0f} |".format(**row))
    print(f"load average at the end: {os.getloadavg()}")


def run(url: str, args: argparse.Namespace) -> list[dict[str, float]]:
    import redis

    from bench.generation import start_server
    from service.core import jobs, migrate
    from service.core.db import get_sessionmaker
    from service.generation import service as gs
    from service.models import Chunk, Document, GenerationJob, Project, PromptTemplate
    from workers.generation import runner

    migrate.upgrade(url)
    redis.Redis.from_url(args.redis_url).flushdb()
    jobs.send_now = lambda name, **kw: None  # the runner is driven here, in this process
    server, server_url = start_server(args.latency)
    out = []
    try:
        for concurrency in args.concurrency:
            with get_sessionmaker()() as db:
                project = Project(name=f"bench-{concurrency}", description="", settings={})
                db.add(project)
                db.flush()
                doc = Document(project_id=project.id, filename="b.md", sha256=f"{concurrency:064d}",
                               storage_path="/dev/null", status="parsed", format="markdown",
                               text="", meta={})
                db.add(doc)
                db.flush()
                db.add_all([Chunk(project_id=project.id, document_id=doc.id, ordinal=i,
                                  text=f"abstract {i}: ultrasound features of thyroid nodules",
                                  char_start=0, char_end=10, heading_path=[], token_count=10,
                                  content_hash=f"{concurrency}-{i}".rjust(64, "0"))
                            for i in range(args.units)])
                prov = gs.create_provider(db, project_id=project.id, data={
                    "name": "fake", "base_url": server_url, "model": "fake-model",
                    "max_concurrency": concurrency, "timeout_s": 30})
                gs.ensure_builtin_templates(db)
                tid = db.query(PromptTemplate.id).filter(
                    PromptTemplate.name == "keywords.en").scalar()
                job = gs.create_job(db, project_id=project.id, template_id=tid,
                                    provider_id=prov.id)
                db.commit()
                job_id = job.id
            started = time.perf_counter()
            result = runner.run_job(job_id)
            wall = time.perf_counter() - started
            with get_sessionmaker()() as db:
                job = db.get(GenerationJob, job_id)
                assert job.status == "succeeded" and job.done_units == args.units, (result, job.error)
            ideal = args.units * args.latency / concurrency
            out.append({"concurrency": concurrency, "units": args.units, "latency": args.latency,
                        "wall": wall, "ideal": ideal, "ratio": wall / ideal,
                        "rate": args.units / wall})
    finally:
        server.kill()
    return out


if __name__ == "__main__":
    main()
