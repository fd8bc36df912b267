"""Search benchmark: the samples list's ``q=`` text search at 1M samples on PostgreSQL (issue 15).

    python bench/search.py                                  # 1M samples, 30 rounds
    python bench/search.py --samples 200000 --rounds 10
    python bench/search.py --keep                           # keep the database afterwards
    python bench/search.py --db annotune_bench_search --load-only   # load once, keep it
    python bench/search.py --db annotune_bench_search       # reuse it when already loaded
    python bench/search.py --database postgresql+psycopg://postgres@127.0.0.1:5432/annotune_bench_search_123

What it does:
1. creates a throwaway database next to ``--pg`` (dropped at the end unless ``--keep``), migrates
   it with the project's Alembic migrations, and bulk-loads ``--samples`` samples with ``COPY``
   through ``bench/review.py``'s loader (``search_text`` and ``content_hash`` computed by the
   app's own functions; the trigram index built after the COPY), then ANALYZE. The text is
   written here, seeded: 45% Chinese, 45% English, 10% both, words drawn from a Zipf-shaped
   vocabulary (so common words are very common), a system prompt from a small set, and planted
   terms at known rates (``PLANTED``), one of them only in the newest 10% of the samples (what a
   later import about a new topic looks like);
2. starts the app (uvicorn, one worker) and asks ``GET /api/v1/projects/{id}/samples?q=...``
   (limit 50, the default sort) as the project's lead, over HTTP, one request at a time: per
   query the first request (cold: a term not asked before in this server process; the OS page
   cache is not dropped, the server is shared) and then ``--rounds`` warm rounds, the queries
   interleaved;
3. the same ``list_samples`` call in-process (the database part alone), and EXPLAIN ANALYZE of
   the statement it runs, to say where the time goes.

Reports p50/p95 per query and per kind (Chinese term, English term, phrase; target: p95 < 100 ms
at 1M samples). ``--database`` reuses a kept database (no load; a fresh API token is made).
"""
from __future__ import annotations

import os
import random
import shlex
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import review as review_bench

# --------------------------------------------------------------------------- the corpus

ZH_WORDS = ["数据", "模型", "训练", "配置文件", "服务器", "用户", "系统", "问题", "方法", "结果", "参数", "文档", "接口", "版本", "网络", "测试", "部署", "日志", "权限", "存储", "缓存", "索引", "查询", "性能", "内存", "进程", "线程", "任务", "队列", "请求", "响应", "错误", "异常", "重试", "超时", "连接", "数据库", "事务", "备份", "恢复", "监控", "告警", "指标", "延迟", "吞吐量", "负载", "集群", "节点", "容器", "镜像", "脚本", "命令行", "环境变量", "依赖", "安装", "升级", "回滚", "迁移", "编码", "字符集", "中文", "英文", "分词", "向量", "检索", "排序", "分页", "过滤", "标签", "样本", "标注", "审核", "导出", "导入", "格式", "字段", "校验", "清洗", "去重", "切分", "摘要", "翻译", "问答", "对话", "提示词", "温度", "采样", "评估", "准确率", "召回率", "损失", "梯度", "学习率", "批大小", "显存", "量化", "微调", "推理", "部署包", "模板", "变量", "函数", "模块", "类型", "对象", "列表"]
EN_WORDS = ["the", "a", "of", "to", "and", "in", "is", "that", "for", "it", "with", "as", "on", "be", "by", "this", "are", "from", "or", "at", "an", "which", "can", "data", "model", "training", "server", "user", "system", "question", "method", "result", "parameter", "document", "interface", "version", "network", "test", "deploy", "log", "permission", "storage", "cache", "index", "query", "performance", "memory", "process", "thread", "task", "queue", "request", "response", "error", "exception", "retry", "timeout", "connection", "database", "transaction", "backup", "restore", "monitor", "alert", "metric", "latency", "throughput", "load", "cluster", "node", "container", "image", "script", "command", "environment", "dependency", "install", "upgrade", "rollback", "migration", "encoding", "charset", "token", "vector", "search", "sort", "page", "filter", "tag", "sample", "label", "review", "export", "import", "format", "field", "validate", "clean", "duplicate", "split", "summary", "translate", "answer", "dialogue", "prompt", "temperature", "evaluate", "accuracy", "recall", "loss", "gradient", "rate", "batch", "quantize", "tune", "inference", "template", "variable", "function", "module", "type", "object", "list", "file", "path", "config", "option", "value", "default", "setting", "run", "build", "release", "schema", "table", "column", "row", "key", "lock", "lease", "worker", "broker", "job", "step", "epoch", "adapter", "weight", "checkpoint", "shard", "replica", "primary", "secondary", "read", "write", "update", "delete", "create", "list"]
SYSTEM_PROMPTS = (
    "You are a careful assistant.",
    "You are a helpful assistant that answers questions about the documentation.",
    "Answer briefly and cite the section you used.",
    "你是一个严谨的助手。",
    "请根据文档内容回答问题，不要编造。",
    "You are an expert in databases; explain your reasoning step by step.",
)
# term -> (share of samples that get it, where): planted in the assistant's answer
PLANTED: dict[str, tuple[float, str]] = {
    "软件包": (0.003, "zh"),
    "依赖冲突": (0.0001, "zh"),
    "熔断": (0.0001, "zh"),              # two characters: no trigram
    "checksum": (0.003, "en"),
    "idempotent": (0.0001, "en"),
    "rolling back the migration": (0.0005, "en"),
    "kubernetes operator": (0.01, "late"),  # 1% of samples, all among the newest 10%
}
QUERIES: dict[str, list[str]] = {
    "Chinese term": ["配置文件", "软件包", "依赖冲突", "量子纠缠", "数据库事务"],
    "Chinese term, 2 characters": ["数据", "熔断"],
    "English term": ["model", "checksum", "CheckSum", "idempotent", "zeppelin"],
    "phrase": ["careful assistant", "rolling back the migration", "kubernetes operator",
               "model data", "lease on the primary replica", "请根据文档内容回答"],
}


def _zipf(words: list[str], s: float = 1.05) -> list[float]:
    return [1.0 / (rank + 1) ** s for rank in range(len(words))]


class Corpus:
    """Seeded mixed Chinese/English conversations; ``messages(i, rng)`` is bench/review.py's hook."""

    def __init__(self, samples: int) -> None:
        self.samples = samples
        self.zh_w = _zipf(ZH_WORDS)
        self.en_w = _zipf(EN_WORDS)

    def _zh(self, rng: random.Random, n: int) -> str:
        words = rng.choices(ZH_WORDS, self.zh_w, k=n)
        out = []
        for j, w in enumerate(words):
            out.append(w)
            if j % 6 == 5:
                out.append("，")
        return "".join(out).rstrip("，") + "。"

    def _en(self, rng: random.Random, n: int) -> str:
        words = rng.choices(EN_WORDS, self.en_w, k=n)
        return (" ".join(words)).capitalize() + "."

    def _sentence(self, lang: str, rng: random.Random, n: int) -> str:
        if lang == "mixed":
            lang = rng.choice(("zh", "en"))
        return self._zh(rng, n) if lang == "zh" else self._en(rng, n)

    def messages(self, i: int, rng: random.Random) -> list[dict[str, str]]:
        r = rng.random()
        lang = "zh" if r < 0.45 else "en" if r < 0.90 else "mixed"
        question = self._sentence(lang, rng, rng.randint(6, 14))
        answer = [self._sentence(lang, rng, rng.randint(8, 20)) for _ in range(rng.randint(2, 4))]
        for term, (share, where) in PLANTED.items():
            if where == "late":
                if i >= self.samples * 0.9 and rng.random() < share * 10:
                    answer.insert(rng.randrange(len(answer) + 1), f"Deploy it with the {term}.")
            elif rng.random() < share:
                answer.insert(rng.randrange(len(answer) + 1),
                              f"关于{term}的说明。" if where == "zh" else f"See {term} here.")
        msgs = [{"role": "user", "content": question},
                {"role": "assistant", "content": " ".join(answer)}]
        if rng.random() < 0.6:
            msgs.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        return msgs


# --------------------------------------------------------------------------- timing

def reuse(url: str) -> dict:
    """The kept database's bench project and a fresh token for its lead."""
    import psycopg
    from sqlalchemy.engine import make_url

    from service.core import security

    u = make_url(url)
    dsn = f"host={u.host} port={u.port or 5432} user={u.username} dbname={u.database}"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT m.project_id, m.user_id FROM memberships m JOIN projects p "
                    "ON p.id = m.project_id WHERE p.name = 'bench' AND m.role = 'lead'")
        project_id, lead = cur.fetchone()
        secret, prefix, digest = security.new_api_token()
        cur.execute("INSERT INTO api_tokens (user_id, name, prefix, token_hash, scopes, created_at) "
                    "VALUES (%s, 'bench', %s, %s, %s, %s)",
                    (lead, prefix, digest, '["api"]', datetime.now(UTC)))
        cur.execute("SELECT count(*) FROM samples WHERE project_id = %s", (project_id,))
        (n,) = cur.fetchone()
    return {"project_id": project_id, "lead": lead, "tokens": {lead: secret}, "samples": n}


def _execute(url: str, statements: list[str]) -> float:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    t0 = time.perf_counter()
    with psycopg.connect(f"host={u.host} port={u.port or 5432} user={u.username} "
                         f"dbname={u.database}", autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
    return time.perf_counter() - t0


def bigram_drop(url: str) -> None:
    """Drop 0018's bigram index before the COPY (kept, it would be updated row by row)."""
    from service.samples import search

    _execute(url, [search.PG_BIGRAM_DROP[0]])


def bigram_build(url: str) -> float:
    """Build it again (what the migration does on an existing database); seconds taken."""
    from service.samples import search

    return _execute(url, [*search.PG_BIGRAM_DDL, "ANALYZE samples"])


def time_http(base: str, world: dict, rounds: int, sort: str) -> tuple[dict, dict, dict]:
    """Cold (first request per query) and warm latencies (ms) of the list endpoint, and the
    number of items on the first page."""
    import httpx

    pid, lead = world["project_id"], world["lead"]
    headers = {"Authorization": f"Bearer {world['tokens'][lead]}"}
    cold: dict[str, float] = {}
    warm: dict[str, list[float]] = defaultdict(list)
    items: dict[str, int] = {}
    queries = [q for qs in QUERIES.values() for q in qs]
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        client.get(f"/api/v1/projects/{pid}/samples", params={"limit": 50})  # connection, pools
        for rnd in range(rounds + 1):
            for q in queries:
                t0 = time.perf_counter()
                resp = client.get(f"/api/v1/projects/{pid}/samples", params={"q": q, "limit": 50, "sort": sort})
                ms = (time.perf_counter() - t0) * 1000
                resp.raise_for_status()
                if rnd == 0:
                    cold[q] = ms
                    items[q] = len(resp.json()["items"])
                else:
                    warm[q].append(ms)
    return cold, warm, items


def time_db(url: str, world: dict, rounds: int, sort: str) -> tuple[dict, dict, dict]:
    """``list_samples`` in-process (median ms), the matching count, and the plan's scans."""
    from sqlalchemy import and_, create_engine, select, text
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.orm import Session

    from service.models import Sample
    from service.samples import service as samples_service

    engine = create_engine(url)
    med: dict[str, float] = {}
    counts: dict[str, int] = {}
    plans: dict[str, str] = {}
    pid = world["project_id"]
    with Session(engine) as db:
        for qs in QUERIES.values():
            for q in qs:
                flt = samples_service.SampleFilter(q=q)
                times = []
                for _ in range(max(3, rounds // 5)):
                    t0 = time.perf_counter()
                    samples_service.list_samples(db, project_id=pid, flt=flt, limit=50, cursor=None,
                                                 sort=sort)
                    times.append((time.perf_counter() - t0) * 1000)
                    db.expunge_all()
                med[q] = sorted(times)[len(times) // 2]
                counts[q] = samples_service.count_samples(db, project_id=pid, flt=flt)
                stmt = (select(Sample).where(and_(*flt.clauses(db, pid)))
                        .order_by(*samples_service.sort_order("id")).limit(51))
                sql = str(stmt.compile(dialect=postgresql.dialect(),
                                       compile_kwargs={"literal_binds": True}))
                plan = [r[0] for r in db.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql))]
                plans[q] = "; ".join(
                    line.strip().split("  (")[0] + (" " + line.split("(actual ")[1].split(")")[0]
                                                    if "(actual " in line else "")
                    for line in plan if "Scan" in line or "Sort" in line.split("(")[0])[:220]
    engine.dispose()
    return med, counts, plans


def pct(values: list[float], q: float) -> float:
    return review_bench.pct(values, q)


def report(cold: dict, warm: dict, items: dict, med: dict, counts: dict, plans: dict) -> str:
    lines = [("| kind | query | matching samples | page items | cold ms | warm p50 ms "
              "| warm p95 ms | in-process median ms |"), "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    summary = ["| kind | warm requests | warm p50 ms | warm p95 ms | cold max ms |",
               "| --- | ---: | ---: | ---: | ---: |"]
    for kind, qs in QUERIES.items():
        for q in qs:
            lines.append(f"| {kind} | `{q}` | {counts[q]} | {items[q]} | {cold[q]:.1f} | "
                         f"{pct(warm[q], 50):.1f} | {pct(warm[q], 95):.1f} | {med[q]:.1f} |")
        every = [ms for q in qs for ms in warm[q]]
        summary.append(f"| {kind} | {len(every)} | {pct(every, 50):.1f} | {pct(every, 95):.1f} | "
                       f"{max(cold[q] for q in qs):.1f} |")
    plan_lines = ["", ("What the planner picks for the same search as one statement (EXPLAIN "
                       "ANALYZE; the list answers in two, see service/samples/search.py):"), ""]
    plan_lines += [f"- `{q}`: {plans[q]}" for qs in QUERIES.values() for q in qs]
    return "\n".join(summary + [""] + lines + plan_lines) + "\n"


def main() -> None:
    ap = review_bench.arguments(__doc__)
    ap.add_argument("--rounds", type=int, default=30, help="warm requests per query")
    ap.add_argument("--keep", action="store_true", help="keep the database (for EXPLAIN afterwards)")
    ap.add_argument("--database", help="reuse a database kept by --keep (no load)")
    ap.add_argument("--sort", default="id", help="the list's sort (id: the API's default; -id: "
                    "newest first, the browser page's default)")
    args = ap.parse_args()

    from sqlalchemy.engine import make_url

    from service.core import migrate

    url, world = args.database, None
    if args.db and review_bench.database_exists(args.pg, args.db):
        url = make_url(args.pg).set(database=args.db).render_as_string(hide_password=False)
        migrate.upgrade(url)  # a kept database meets a newer schema (an index revision)
        world = review_bench.load_world(url)  # None: a load cut short, loaded again below
        if world is None:
            url = None
    url = url or review_bench.create_database(args.pg, prefix="annotune_bench_search",
                                              name=args.db)
    proc = None
    try:
        if world is not None:  # (the statistics of the load kept: the same phrase patterns)
            print(f"reusing database {args.db} (about {world['samples_estimate']} samples)",
                  flush=True)
        elif args.database:
            migrate.upgrade(url)  # a kept database meets a newer schema (an index revision)
            _execute(url, ["ANALYZE samples"])  # statistics for a new expression index
            world = reuse(url)
            print(f"reusing {url}: {world['samples']} samples", flush=True)
        else:
            t0 = time.perf_counter()
            migrate.upgrade(url)
            bigram_drop(url)  # built after the COPY, as the loader does the trigram indexes
            world = review_bench.seed(url, samples=args.samples, annotators=1,
                                      messages=Corpus(args.samples).messages)
            bigram_s = bigram_build(url)
            print(f"loaded {args.samples} samples: COPY {world['load_seconds']:.1f} s, trigram "
                  f"indexes {world['index_seconds']:.1f} s, bigram index {bigram_s:.1f} s "
                  f"(setup {time.perf_counter() - t0:.1f} s)", flush=True)
        if args.load_only:
            return
        port = review_bench.free_port()
        proc = review_bench.start_server(url, port, 1)
        load = [os.getloadavg()]
        cold, warm, items = time_http(f"http://127.0.0.1:{port}", world, args.rounds, args.sort)
        review_bench.stop_server(proc)
        proc = None
        med, counts, plans = time_db(url, world, args.rounds, args.sort)
        load.append(os.getloadavg())
        cmd = " ".join(shlex.quote(a) for a in ["python", "bench/search.py", *sys.argv[1:]])
        print(f"command: `{cmd}`\nload average (1, 5, 15 min) before timing: "
              f"{load[0]}, after: {load[1]}; CPUs: {os.cpu_count()}\n")
        print(report(cold, warm, items, med, counts, plans), flush=True)
    finally:
        if proc is not None:
            review_bench.stop_server(proc)
        if args.keep or args.database or args.db:
            print(f"kept database {url}")
        else:
            review_bench.drop_database(args.pg, url)


if __name__ == "__main__":
    main()
