"""Build + export benchmark for service/datasets on PostgreSQL.

Creates a throwaway database next to ``--database-url`` (dropped at the end), inserts ``--n``
samples with COPY, then runs, each in a fresh child process so that its peak RSS is its own:

1. ``build``: the real ``datasets.build_version`` task body (three streamed passes + leakage);
2. ``export``: the real ``datasets.export_version`` task body, for each of ``--formats``
   (JSON Lines: OpenAI, Alpaca, ShareGPT);
3. ``raw``: the same frozen rows loaded into memory as Python objects, the records of the
   format made (untimed, 100k at a time), then dumped with ``orjson.dumps(record)`` + ``\\n``
   to a file (timed), fsync included: what serialising records already in memory costs. The
   export's files, concatenated in split order, must have the raw dump's sha256.

    .venv/bin/python bench/export.py --n 200000
    .venv/bin/python bench/export.py --n 1000000 --json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def _vocabulary(n: int = 6000) -> list[str]:
    import random

    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


WORDS = _vocabulary()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _text(i: int, n: int) -> str:
    # pseudo-random words (a multiplicative hash of the sample and position): unrelated samples
    # share few 5-grams, as real text does
    return " ".join(WORDS[((i * 2654435761 + k * 40503) ^ (i >> 3)) % len(WORDS)] for k in range(n))


def _messages(i: int) -> list[dict[str, str]]:
    """1-2 turns, a system prompt on one in four; one sample in 100 repeats an earlier sample's
    text with a one-word change (near duplicates for the leakage check to find)."""
    src = i - 50 if i % 100 == 7 else i
    msgs = []
    if i % 4 == 0:
        msgs.append({"role": "system", "content": "You are a careful legal assistant."})
    for t in range(1 + (i % 3 == 0)):
        msgs.append({"role": "user", "content": f"What does clause {src % 997} say? "
                                                + _text(src + t, 28)})
        msgs.append({"role": "assistant", "content": f"« {_text(src * 3 + t, 55)} » 付款。"
                                                     + (" (revised)" if src != i else "")})
    return msgs


# --- setup --------------------------------------------------------------------------------------


def setup(admin_url: str, n: int, name: str | None = None) -> str:
    """A fresh database ``name`` (default: one named after this process), migrated, with ``n``
    samples; its URL."""
    import orjson
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from service.core import migrate

    url = make_url(admin_url)
    name = name or f"annotune_bench_export_{os.getpid()}"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    db_url = url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(db_url)
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO users (email, name, password_hash, is_admin, is_active, created_at) "
                        "VALUES ('bench@example.com', 'bench', 'x', false, true, now()) RETURNING id")
            uid = cur.fetchone()[0]
            cur.execute("INSERT INTO projects (name, description, settings, created_by_id, created_at, "
                        "updated_at) VALUES ('bench', '', '{}', %s, now(), now()) RETURNING id", (uid,))
            pid = cur.fetchone()[0]
            docs = []
            for d in range(1000):
                cur.execute("INSERT INTO documents (project_id, filename, content_type, format, "
                            "size_bytes, sha256, storage_path, status, metadata, chunk_count, attempts, "
                            "cancel_requested, created_at, updated_at) VALUES (%s, %s, '', 'txt', 0, "
                            "%s, '', 'parsed', '{}', 0, 0, false, now(), now()) RETURNING id", (pid, f"d{d}.txt", f"{d:064d}"))
                docs.append(cur.fetchone()[0])
            cols = ("project_id, messages, status, version, content_hash, source, document_id, "
                    "provenance, tags, scores, reviewed_by_id, created_at, updated_at")
            prov = '{"model": "qwen3-8b", "template": {"name": "qa", "version": 3}}'
            with cur.copy(f"COPY samples ({cols}) FROM STDIN") as cp:
                for i in range(n):
                    status = "accepted" if i % 10 else "pending"
                    cp.write_row((pid, orjson.dumps(_messages(i)).decode(), status, 1, f"{i:064x}",
                                  "generation", docs[i % 1000], prov,
                                  '["law"]' if i % 2 else '["tax", "law"]',
                                  '{"quality": %.2f}' % ((i % 100) / 100), uid,
                                  "2026-11-29T00:00:00+00", "2026-11-29T00:00:00+00"))
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
    print(f"setup: inserted {n} samples in {time.perf_counter() - t0:.1f}s (COPY)", file=sys.stderr)
    return db_url


def drop(admin_url: str, db_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(admin_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(db_url).database}" WITH (FORCE)'))
    admin.dispose()


def _reusable(admin_url: str, name: str) -> dict | None:
    """The URL of database ``name`` and its latest ready version (as a build result with no
    timing), or None when there is no such database or no ready version in it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    admin = create_engine(url.set(database="postgres"))
    with admin.connect() as conn:
        exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
    admin.dispose()
    if not exists:
        return None
    db_url = url.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, counts FROM dataset_versions WHERE status = 'ready' "
                                "ORDER BY id DESC LIMIT 1")).first()
    engine.dispose()
    if row is None:
        return None
    vid, counts = row
    print(f"reusing database {name}, version {vid} ({counts['total']} samples)", file=sys.stderr)
    return {"url": db_url, "build": {"version_id": vid, "seconds": None, "samples": counts["total"],
                                     "counts": counts, "samples_per_s": None, "peak_rss_mb": None,
                                     "leakage": {}, "reused": True}}


# --- phases (each in its own process) -----------------------------------------------------------


def _timed_task(task, arg: int) -> tuple[float, float]:
    """Run a Celery task's body here; ``(seconds, RSS before in MB)``."""
    rss0 = rss_mb()
    t0 = time.perf_counter()
    result = task.run(arg)
    assert result.get("status") == "ready", result
    return time.perf_counter() - t0, rss0


def _sha256(paths: list[Path]) -> str:
    """One sha256 over the files, concatenated in the given order (missing ones skipped)."""
    import hashlib

    whole = hashlib.sha256()
    for path in paths:
        if path.exists():
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    whole.update(block)
    return whole.hexdigest()


def phase_build() -> dict:
    from sqlalchemy import select

    from service.core import jobs
    from service.core.db import session_scope
    from service.datasets import schemas
    from service.datasets import service as datasets_service
    from service.models import DatasetVersion, Project
    from workers.tasks.datasets import build_version

    jobs.send_now = lambda name, **kw: None  # we run the task body ourselves, in this process
    with session_scope() as db:
        pid = db.scalar(select(Project.id))
        ds = datasets_service.create_dataset(db, project_id=pid, name="bench")
        v = datasets_service.create_version(db, dataset=ds, spec=schemas.VersionCreate(seed=1))
        vid = v.id
    dt, rss0 = _timed_task(build_version, vid)
    with session_scope() as db:
        v = db.get(DatasetVersion, vid)
        counts, leak = v.counts, v.stats["leakage"]
    return {"version_id": vid, "seconds": dt, "samples": counts["total"], "counts": counts,
            "samples_per_s": counts["total"] / dt, "rss_start_mb": rss0, "peak_rss_mb": rss_mb(),
            "leakage": leak}


def phase_export(version_id: int, fmt: str = "openai") -> dict:
    from sqlalchemy import delete

    from service.core import jobs
    from service.core.db import session_scope
    from service.datasets import service as datasets_service
    from service.models import DatasetExport, DatasetVersion
    from workers.tasks.datasets import export_version

    jobs.send_now = lambda name, **kw: None
    with session_scope() as db:
        # a reused database keeps the exports of earlier runs: start from none, as after a build
        db.execute(delete(DatasetExport).where(DatasetExport.version_id == version_id,
                                               DatasetExport.format == fmt))
        exp, _ = datasets_service.create_export(db, version=db.get(DatasetVersion, version_id),
                                                fmt=fmt)
        eid = exp.id
    dt, rss0 = _timed_task(export_version, eid)
    with session_scope() as db:
        exp = db.get(DatasetExport, eid)
        members = exp.files["members"]
        total = db.get(DatasetVersion, version_id).counts["total"]
    size = sum(m["bytes"] for n, m in members.items() if n.endswith(".jsonl"))
    # after the timing: the three files concatenated in split order, to compare with the raw dump
    from service.datasets.export import export_dir

    folder = export_dir(version_id, fmt)
    whole = _sha256([folder / f"{split}.jsonl" for split in ("train", "validation", "test")])
    return {"format": fmt, "seconds": dt, "samples": total, "samples_per_s": total / dt,
            "bytes": size, "rss_start_mb": rss0, "peak_rss_mb": rss_mb(),
            "sha256": {n: m["sha256"] for n, m in members.items() if n.endswith(".jsonl")},
            "sha256_all_splits": whole}


def phase_raw(version_id: int, fmt: str = "openai") -> dict:
    """The records of ``fmt`` already in memory as Python objects (made untimed, 100k at a
    time: ``{"messages": m}``, or ``formats.convert_out``), then ``orjson.dumps`` + ``\\n`` to
    a file, fsync included (timed)."""
    import orjson
    from sqlalchemy import text

    from service.core.db import get_engine
    from service.samples import formats

    out = Path(tempfile.mkdtemp()) / "raw.jsonl"
    timed = 0.0
    n = 0
    with get_engine().connect() as conn, open(out, "wb", buffering=1 << 20) as fh:
        for split in ("train", "validation", "test"):
            last = -1
            while True:
                rows = conn.execute(text(
                    "SELECT position, messages FROM dataset_version_items WHERE version_id = :v AND "
                    "split = :s AND position > :p ORDER BY position LIMIT 100000"),
                    {"v": version_id, "s": split, "p": last}).all()
                if not rows:
                    break
                last = rows[-1][0]
                # in memory as Python objects, like the rows of any ORM query: not timed
                batch = [orjson.loads(r[1]) for r in rows]  # the column is canonical JSON text
                records = ([{"messages": m} for m in batch] if fmt == "openai" else
                           [formats.convert_out(m, fmt) for m in batch])
                t0 = time.perf_counter()
                dumps = orjson.dumps
                fh.write(b"".join(dumps(r) + b"\n" for r in records))
                timed += time.perf_counter() - t0
                n += len(batch)
        t0 = time.perf_counter()
        fh.flush()
        os.fsync(fh.fileno())
        timed += time.perf_counter() - t0
    digest = _sha256([out])
    out.unlink()
    return {"format": fmt, "seconds": timed, "samples": n,
            "samples_per_s": n / timed if timed else None, "sha256": digest}


def _child(phase: str, db_url: str, data_dir: str, *args: str) -> dict:
    env = dict(os.environ, ANNOTUNE_DATABASE_URL=db_url, ANNOTUNE_DATA_DIR=data_dir,
               ANNOTUNE_CELERY_EAGER="false", ANNOTUNE_LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, __file__, "--phase", phase, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode:
        raise RuntimeError(f"{phase} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--formats", default="openai,alpaca,sharegpt",
                        help="JSON Lines formats to export, comma-separated")
    parser.add_argument("--database-url", default=os.environ.get(
        "ANNOTUNE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--name", help="database name (default: one named after this process)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--reuse", action="store_true",
                        help="with --name: use that database and its latest ready version if it "
                             "has one (no insert, no build; implies --keep)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        fn = {"build": lambda: phase_build(),
              "export": lambda: phase_export(int(args.args[0]), args.args[1]),
              "raw": lambda: phase_raw(int(args.args[0]), args.args[1])}[args.phase]
        print(json.dumps(fn()))
        return

    if args.reuse and not args.name:
        parser.error("--reuse needs --name")
    reused = _reusable(args.database_url, args.name) if args.reuse else None
    db_url = reused["url"] if reused else setup(args.database_url, args.n, name=args.name)
    keep = args.keep or args.reuse
    data_dir = tempfile.mkdtemp(prefix="annotune-bench-export-")
    exports: dict[str, dict] = {}
    try:
        build = reused["build"] if reused else _child("build", db_url, data_dir)
        vid = str(build["version_id"])
        if not reused:
            print(f"build: {build['samples']} samples in {build['seconds']:.1f}s "
                  f"= {build['samples_per_s']:,.0f}/s, peak RSS {build['peak_rss_mb']:.0f} MB",
                  file=sys.stderr)
        for fmt in args.formats.split(","):
            export = _child("export", db_url, data_dir, vid, fmt)
            raw = _child("raw", db_url, data_dir, vid, fmt)
            exports[fmt] = {"export": export, "raw_dump": raw,
                            "export_vs_raw": export["seconds"] / raw["seconds"],
                            "export_bytes_equal_raw":
                                export["sha256_all_splits"] == raw["sha256"]}
            print(f"export {fmt}: {export['seconds']:.1f}s = {export['samples_per_s']:,.0f}/s, "
                  f"peak RSS {export['peak_rss_mb']:.0f} MB; raw {raw['seconds']:.1f}s; "
                  f"{exports[fmt]['export_vs_raw']:.2f}x; same bytes "
                  f"{exports[fmt]['export_bytes_equal_raw']}", file=sys.stderr)
    finally:
        if not keep:
            drop(args.database_url, db_url)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
    report = {"n_inserted": args.n, "reused_database": bool(reused), "build": build, "exports": exports,
              "load_average_after": os.getloadavg()[0], "python": sys.version.split()[0],
              "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"samples in version: {build['samples']:,}  (of {args.n:,} inserted; 90% accepted)")
        if not reused:
            print(f"build : {build['seconds']:8.1f} s  {build['samples_per_s']:10,.0f} samples/s  "
                  f"peak RSS {build['peak_rss_mb']:.0f} MB  leakage {build['leakage'].get('checked')}")
        for fmt, e in exports.items():
            ex, raw = e["export"], e["raw_dump"]
            print(f"{fmt:9}: export {ex['seconds']:6.1f} s {ex['samples_per_s']:9,.0f}/s "
                  f"peak RSS {ex['peak_rss_mb']:.0f} MB ({ex['bytes'] / 1e6:.0f} MB); raw "
                  f"{raw['seconds']:6.1f} s; export / raw = {e['export_vs_raw']:.2f}x; "
                  f"same bytes: {e['export_bytes_equal_raw']}")


if __name__ == "__main__":
    main()
