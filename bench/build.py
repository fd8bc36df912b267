"""Version build benchmark: this tree's ``datasets.build_version`` against a baseline commit's,
side by side on the same samples in the same run, on PostgreSQL.

Creates a throwaway database next to ``--database-url`` (dropped at the end unless ``--keep``),
inserts ``--n`` samples with COPY (``bench/export.py``'s generator: 90% selected, near
duplicates planted for the leakage check), then builds one version per round and side, each
in a fresh child process (peak RSS its own): ``current`` runs this checkout, ``baseline`` runs
``git archive <--baseline>`` of ``service/`` and ``workers/`` in a temporary folder. The order
alternates (A B B A ...) so that a change of load on these shared machines hits both sides.
Finally every version is compared item by item with the first: same samples, splits,
positions, frozen text, hashes and revisions, same stats and leakage report.

    .venv/bin/python bench/build.py --n 100000
    .venv/bin/python bench/build.py --n 1000000 --rounds 1 --json
    .venv/bin/python bench/build.py --n 1000000 --name annotune_bench_build --reuse
    .venv/bin/python bench/build.py --n 1000000 --reuse --baseline a2db196 \\
        --baseline-schema 0021_fk_indexes   # the baseline on its own schema, same run
    .venv/bin/python bench/build.py --n 1000000 --reuse --baseline e2099d5 \
        --filter '{"tags": ["tax"]}'   # a version's filter (VersionFilter JSON), both sides
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = Path(os.environ.get("BENCH_CODE_ROOT") or ROOT)
sys.path.insert(0, str(CODE))
sys.path.insert(1, str(ROOT / "bench"))

BASELINE = "31f101b"  # main before the set-based build (issue 23.1)


def phase_build() -> dict:
    import resource

    from sqlalchemy import select

    from service.core import jobs
    from service.core.db import session_scope
    from service.datasets import schemas
    from service.datasets import service as datasets_service
    from service.models import Dataset, DatasetVersion, Project
    from workers.tasks.datasets import build_version

    jobs.send_now = lambda name, **kw: None  # the task body runs here, in this process
    with session_scope() as db:
        dataset = db.scalar(select(Dataset).where(Dataset.name == "bench-build"))
        if dataset is None:
            dataset = datasets_service.create_dataset(db, project_id=db.scalar(select(Project.id)),
                                                      name="bench-build")
        vid = datasets_service.create_version(db, dataset=dataset,
                                              spec=schemas.VersionCreate(
                                                  seed=1, filter=json.loads(
                                                      os.environ.get("BENCH_FILTER") or "{}"))).id
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = build_version.run(vid)
    seconds = time.perf_counter() - t0
    assert result.get("status") == "ready", result
    with session_scope() as db:
        v = db.get(DatasetVersion, vid)
        total, leak = v.counts["total"], v.stats["leakage"]
    return {"version_id": vid, "seconds": seconds, "samples": total,
            "samples_per_s": total / seconds, "rss_start_mb": rss0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            # the largest child process's (a sharded build's freeze loops), 0 without any
            "child_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "leakage": leak}


def compare(db_url: str, first: int, other: int) -> dict:
    """Differences between two built versions (all zero / true when they are the same)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        differ = conn.execute(text(
            "SELECT count(*) FROM (SELECT * FROM dataset_version_items WHERE version_id = :a) a "
            "FULL JOIN (SELECT * FROM dataset_version_items WHERE version_id = :b) b "
            "USING (sample_id) WHERE (a.split, a.position, a.messages, a.content_hash, "
            "a.revision_id, a.sample_version, a.document_id) IS DISTINCT FROM (b.split, "
            "b.position, b.messages, b.content_hash, b.revision_id, b.sample_version, "
            "b.document_id)"), {"a": first, "b": other}).scalar()
        rows = {r[0]: r[1:] for r in conn.execute(text(
            "SELECT id, counts::text, stats::text, leakage::text FROM dataset_versions "
            "WHERE id IN (:a, :b)"), {"a": first, "b": other})}
    engine.dispose()
    a, b = rows[first], rows[other]
    return {"items_differing": differ, "same_counts": a[0] == b[0],
            "same_stats": a[1] == b[1], "same_leakage_report": a[2] == b[2]}


def _reused(admin_url: str, name: str, n: int) -> str | None:
    """The URL of database ``name`` when it holds exactly ``n`` samples (its versions dropped),
    else None (no such database, or another size)."""
    from sqlalchemy import create_engine, exc, text
    from sqlalchemy.engine import make_url

    db_url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            count = conn.scalar(text("SELECT count(*) FROM samples"))
    except exc.DBAPIError:
        return None
    finally:
        engine.dispose()
    if count != n:
        return None
    _drop_versions(db_url)
    print(f"reusing database {name} ({n} samples)", file=sys.stderr)
    return db_url


def _drop_versions(db_url: str) -> None:
    """Empty the versions a run built (the bench database is the bench's own)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE dataset_version_items CASCADE"))
        conn.execute(text("DELETE FROM dataset_versions"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE dataset_version_items"))
    engine.dispose()


def _schema(db_url: str, revision: str) -> None:
    """The bench database at ``revision`` (this checkout's migrations; untimed)."""
    from service.core import migrate

    if revision == "head":
        migrate.upgrade(db_url)
    else:
        migrate.downgrade(db_url, revision)
    print(f"schema: {revision}", file=sys.stderr)


def _baseline_tree(commit: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="annotune-bench-baseline-"))
    archive = subprocess.run(["git", "archive", commit, "service", "workers"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def _child(db_url: str, data_dir: str, code_root: Path | None) -> dict:
    env = dict(os.environ, ANNOTUNE_DATABASE_URL=db_url, ANNOTUNE_DATA_DIR=data_dir,
               ANNOTUNE_CELERY_EAGER="false", ANNOTUNE_LOG_LEVEL="WARNING",
               BENCH_CODE_ROOT=str(code_root or ""), PYTHONPATH=str(code_root or ROOT))
    proc = subprocess.run([sys.executable, __file__, "--phase", "build"], env=env,
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode:
        raise RuntimeError(f"build failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1, help="A B pairs (order alternates)")
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with")
    parser.add_argument("--database-url", default=os.environ.get(
        "ANNOTUNE_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--name", default=f"bench_build_{os.getpid()}", help="database name")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--reuse", action="store_true",
                        help="use database --name as it is when it holds --n samples (load it "
                             "otherwise), drop its versions before and after, keep it")
    parser.add_argument("--baseline-schema", metavar="REVISION",
                        help="run the baseline on the schema of this migration (downgraded to "
                             "it before each baseline build, upgraded to head before each "
                             "current one; untimed), e.g. 0021_fk_indexes")
    parser.add_argument("--filter", default="{}",
                        help="the versions' filter, as VersionFilter JSON (default: accepted)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase_build()))
        return
    os.environ["BENCH_FILTER"] = args.filter  # the children read it

    import export as export_bench

    db_url = _reused(args.database_url, args.name, args.n) if args.reuse else None
    if db_url is None:
        db_url = export_bench.setup(args.database_url, args.n, name=args.name)
    args.keep = args.keep or args.reuse
    data_dir = tempfile.mkdtemp(prefix="annotune-bench-build-")
    baseline_root = _baseline_tree(args.baseline)
    runs: list[dict] = []
    try:
        load = os.getloadavg()[0]
        for r in range(args.rounds):
            for side in (("current", "baseline") if r % 2 == 0 else ("baseline", "current")):
                if args.baseline_schema:
                    _schema(db_url, args.baseline_schema if side == "baseline" else "head")
                run = _child(db_url, data_dir, baseline_root if side == "baseline" else None)
                run["side"] = side
                runs.append(run)
                print(f"{side:8}: {run['samples']} samples in {run['seconds']:.1f}s = "
                      f"{run['samples_per_s']:,.0f}/s, peak RSS {run['peak_rss_mb']:.0f} MB "
                      f"(child {run.get('child_peak_rss_mb', 0):.0f} MB), "
                      f"leakage {run['leakage'].get('count')}", file=sys.stderr)
        same = [compare(db_url, runs[0]["version_id"], run["version_id"]) for run in runs[1:]]
    finally:
        if args.baseline_schema:
            _schema(db_url, "head")
        if args.reuse:
            _drop_versions(db_url)
        if not args.keep:
            export_bench.drop(args.database_url, db_url)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(baseline_root, ignore_errors=True)

    def best(side: str) -> dict:
        return min((r for r in runs if r["side"] == side), key=lambda r: r["seconds"])

    cur, base = best("current"), best("baseline")
    report = {"n_inserted": args.n, "baseline": args.baseline, "filter": json.loads(args.filter),
              "baseline_schema": args.baseline_schema, "runs": runs,
              "same_as_first": same, "speedup": base["seconds"] / cur["seconds"],
              "load_average_before": load, "load_average_after": os.getloadavg()[0],
              "python": sys.version.split()[0], "cpus": os.cpu_count()}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"samples in version: {cur['samples']:,} (of {args.n:,} inserted)")
        for name, run in (("current", cur), ("baseline", base)):
            print(f"{name:8}: {run['seconds']:7.1f} s {run['samples_per_s']:9,.0f} samples/s  "
                  f"peak RSS {run['peak_rss_mb']:.0f} MB  leakage {run['leakage'].get('count')}")
        print(f"speedup {report['speedup']:.2f}x; identical versions: "
              f"{all(all(v in (0, True) for v in d.values()) for d in same)}; load average "
              f"{load:.1f} -> {report['load_average_after']:.1f}")


if __name__ == "__main__":
    main()
