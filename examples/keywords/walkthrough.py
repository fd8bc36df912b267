"""The keyword-extraction loop of the course document, against a running annotune, REST only.

    .venv/bin/annotune up                                      # the product (another terminal)
    .venv/bin/annotune login http://127.0.0.1:8000 --email admin@localhost
    .venv/bin/python examples/keywords/walkthrough.py          # ~10-15 min on 2 CPU cores

or, on a fresh private server in a temporary data folder: ``walkthrough.py --start``.

Steps, each through ``service.client`` (the REST API): create a project; upload the corpus
(``corpus.jsonl``: 320 short abstracts written for this project, half Chinese, half English)
as one text document per abstract; create two custom keyword templates (the course's
instruction, Chinese and English) whose regex output parser keeps the keyword line; draft keywords
for a few documents with the base model (SmolLM2-135M-Instruct in the worker) and spot-check
them: the reviewer corrects each draft to the abstract's reference keywords and accepts it;
the other abstracts' samples are the reference keywords themselves (the base model cannot
write references worth training on: see the spot check), created against their documents
and tagged ``reference``; bulk-accept; freeze a document-stratified version; export it
(ShareGPT, the course's LLaMA-Factory format); train ``lora`` (``qlora`` where the worker has
CUDA); evaluate base and fine-tuned on the test split (keyword-F1, ROUGE-L); print the
comparison with paired-bootstrap 95% intervals. Round two: the fine-tuned model becomes a
provider of the project and drafts the spot-check documents again.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import corpus

from service.client import Client, ClientError, format_comparison

SEPARATORS = [";", "；", ",", "，", "、"]
# the first line of the answer, without a leading "Keywords:" / "关键词：" label
KEYWORD_LINE = r"^\s*(?:keywords?|关键词)?\s*[:：]?\s*(?P<keywords>[^\n]+)"
DEFAULT_HP = {"max_steps": 24, "batch_size": 4, "gradient_accumulation": 1,
              "learning_rate": 1e-3, "max_seq_length": 384, "lora_r": 16, "lora_alpha": 32,
              "warmup_ratio": 0.05, "logging_steps": 4, "save_steps": 1000,
              "optim": "adamw_torch", "seed": 19}


class Log:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.t0
        self.steps.append((message, elapsed))
        print(f"[{elapsed:6.0f}s load {os.getloadavg()[0]:4.1f}] {message}", flush=True)


def run(api: Client, *, records: list[dict[str, Any]] | None = None,
        base_model: str = "smollm2-135m-instruct", draft_model: str | None = None,
        drafts_per_lang: int = 2, hyperparameters: dict[str, Any] | None = None,
        method: str = "lora", max_tokens: int = 48, draft_tokens: int = 48,
        split: dict[str, float] | None = None, seed: int = 19, round_two: bool = True,
        log: Log | None = None) -> dict[str, Any]:
    """The whole loop; returns ids, counts and the comparison. ``draft_model``: the in-worker
    model that drafts (default: ``base_model``, through its local provider)."""
    log = log or Log()
    records = records if records is not None else corpus.load()
    by_name = {f"{r['id']}.txt": r for r in records}

    project = api.create_project(f"keywords walkthrough {time.strftime('%Y-%m-%d %H:%M:%S')}")
    pid = project["id"]
    log(f"project {pid} created")

    # 1. documents: one text file per abstract
    results = api.upload_documents(pid, [(name, r["abstract"].encode()) for name, r in
                                         by_name.items()])
    doc_of = {res["filename"]: res["document_id"] for res in results if res.get("document_id")}
    if len(doc_of) != len(by_name):
        raise SystemExit(f"uploads refused: {[r for r in results if not r.get('document_id')]}")
    api.wait_documents(pid, doc_of.values())
    log(f"{len(doc_of)} documents uploaded and parsed")

    # 2. custom templates (the course's instruction) with a regex output parser
    parser = {"kind": "regex", "pattern": KEYWORD_LINE, "flags": 2, "group": "keywords"}
    templates = {lang: api.create_template(pid, name=f"keywords-{lang}", kind="keywords",
                                           lang=lang, parser=parser,
                                           text=corpus.PROMPTS[lang] + "{{ text }}")
                 for lang in ("zh", "en")}
    first = next(iter(by_name))
    chunk = api.get(f"/projects/{pid}/documents/{doc_of[first]}/chunks")["items"][0]
    shown = api.post(f"/projects/{pid}/templates/{templates[by_name[first]['lang']]['id']}/preview",
                     {"chunk_id": chunk["id"]})["rendered"]
    if shown != corpus.prompt(by_name[first]):  # the references use exactly this prompt
        raise SystemExit(f"the template renders {shown!r}, not the corpus prompt")

    # 3. drafts by the base model for a few documents, spot-checked by a reviewer
    provider = _local_provider(api, pid, draft_model or base_model)
    spot = {lang: [n for n, r in by_name.items() if r["lang"] == lang][:drafts_per_lang]
            for lang in ("zh", "en")}
    drafts = _draft(api, pid, provider, templates, spot, doc_of, draft_tokens)
    log(f"{len(drafts)} drafts by {provider['model']} (generation, custom template + parser)")
    corrected = 0
    for sample in drafts:
        record = by_name[_filename(sample, doc_of)]
        print(f"    {record['id']}  draft: {sample['messages'][-1]['content'][:80]!r}\n"
              f"    {' ' * len(record['id'])}  reference: {corpus.answer(record)}")
        messages = [*sample["messages"][:-1],
                    {"role": "assistant", "content": corpus.answer(record)}]
        if messages != sample["messages"]:
            corrected += 1
            sample = api.update_sample(pid, sample, messages=messages,
                                       tags=["reference", "corrected-draft"],
                                       comment="reviewer: replaced by the reference keywords")
        else:
            sample = api.update_sample(pid, sample, tags=["reference"])
    log(f"spot check: {corrected}/{len(drafts)} drafts corrected to the reference keywords")

    # 4. the other abstracts: their reference keywords, against their documents
    drafted = {_filename(sample, doc_of) for sample in drafts}
    for name, record in by_name.items():
        if name in drafted:
            continue
        api.post(f"/projects/{pid}/samples", {
            "messages": [{"role": "user", "content": corpus.prompt(record)},
                         {"role": "assistant", "content": corpus.answer(record)}],
            "document_id": doc_of[name], "tags": ["reference"]})
    accepted = api.bulk(pid, {"status": ["pending"], "tag": "reference"}, status="accepted")
    log(f"{len(by_name) - len(drafted)} reference samples created; bulk accept: {accepted}")

    # 5. a document-stratified version, exported
    dataset = api.create_dataset(pid, "keywords", "abstract -> keywords (Chinese and English)")
    version = api.freeze(pid, dataset["id"], seed=seed, stratify_by="document",
                         split=split or {"train": 0.8, "validation": 0.05, "test": 0.15},
                         filter={"status": ["accepted"], "tags": ["reference"]})
    version = api.wait_version(pid, dataset["id"], version["id"])
    log(f"version {version['id']} ready: {version['counts']} (stratified by document)")
    api.export(pid, dataset["id"], version["id"], "sharegpt")
    export = api.wait_export(pid, dataset["id"], version["id"], "sharegpt")
    zipped = api.get(api.version_path(pid, dataset["id"], version["id"])
                     + "/exports/sharegpt/download")
    names = zipfile.ZipFile(io.BytesIO(zipped)).namelist()
    log(f"ShareGPT export ready (sha256 {export['manifest_sha256'][:12]}…): {', '.join(names)}")

    # 6. train
    hp = {**DEFAULT_HP, **(hyperparameters or {})}
    job = api.train(pid, dataset_version_id=version["id"], base_model=base_model, method=method,
                    hyperparameters=hp, use_validation=False, suffix="keywords")
    job = api.wait_training(pid, job["id"])
    losses = api.training_losses(pid, job["id"])
    log(f"training job {job['id']} ({method}) {job['status']} after {job['step']} steps; "
        f"loss {losses[0][1]:.3f} -> {losses[-1][1]:.3f}" if losses else "")

    # 7. evaluate base and fine-tuned on the test split, compare
    common = {"dataset_version_id": version["id"], "split": "test",
              "generation": {"max_tokens": max_tokens, "batch_size": 8},
              "metrics": ["keywords", "rouge"],
              "metric_options": {"keywords": {"separators": SEPARATORS, "casefold": True}}}
    base_run = api.evaluate(pid, model_kind="base", base_model=base_model, name="base",
                            **common)
    base_run = api.wait_eval(pid, base_run["id"])
    log(f"base evaluated: {_means(base_run)}")
    tuned_run = api.evaluate(pid, model_kind="adapter", training_job_id=job["id"],
                             name="fine-tuned", **common)
    tuned_run = api.wait_eval(pid, tuned_run["id"])
    log(f"fine-tuned evaluated: {_means(tuned_run)}")
    cmp = api.compare(pid, [base_run["id"], tuned_run["id"]], n_resamples=10000, seed=0)
    print(format_comparison(_only(cmp, ("keyword_f1", "rouge-l"))), flush=True)

    # 8. round two: the fine-tuned model drafts the spot-check documents again
    second: list[dict[str, Any]] = []
    if round_two:
        tuned = api.register_provider(pid, job["id"])
        # a unit (chunk x template version) is drafted once: round two is a new version
        again = {lang: api.create_template(pid, name=t["name"], kind=t["kind"], lang=lang,
                                           parser=t["parser"], text=t["text"])
                 for lang, t in templates.items()}
        second = _draft(api, pid, tuned, again, spot, doc_of, draft_tokens)
        for sample in second:
            record = by_name[_filename(sample, doc_of)]
            print(f"    {record['id']}  round two: {sample['messages'][-1]['content'][:80]!r}"
                  f"\n    {' ' * len(record['id'])}  reference: {corpus.answer(record)}")
        log(f"round two: provider {tuned['id']} ({tuned['name']}) drafted {len(second)} samples")
    return {"project_id": pid, "version": version, "job": job, "losses": losses,
            "runs": [base_run, tuned_run], "compare": cmp, "drafts": drafts,
            "round_two": second, "steps": log.steps}


def _local_provider(api: Client, pid: int, model: str) -> dict[str, Any]:
    """The in-worker provider of ``model`` (built in for SmolLM2), added when missing."""
    try:
        return api.local_provider(pid, model)
    except ClientError:
        return api.create_provider(pid, name=f"local {Path(model).name}", kind="local",
                                   model=model, max_concurrency=1, timeout_s=600)


def _draft(api: Client, pid: int, provider: dict[str, Any], templates: dict[str, Any],
           spot: dict[str, list[str]], doc_of: dict[str, int], max_tokens: int
           ) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    for lang, names in spot.items():
        if not names:
            continue
        job = api.generate(pid, template_id=templates[lang]["id"], provider_id=provider["id"],
                           document_ids=[doc_of[n] for n in names],
                           params={"sampling": {"max_tokens": max_tokens},
                                   "keep_truncated": True})  # drafts, corrected by people
        job = api.wait_generation(pid, job["id"])
        samples += api.list_samples(pid, generation_job_id=job["id"])
    return samples


def _filename(sample: dict[str, Any], doc_of: dict[str, int]) -> str:
    return next(name for name, doc in doc_of.items() if doc == sample["document_id"])


def _means(run: dict[str, Any]) -> str:
    agg = run["aggregate"]
    return ", ".join(f"{k} {agg[k]:.3f}" for k in ("keyword_f1", "rouge-l") if k in agg) + \
        f" ({run['done']} items, {run['failed']} failed)"


def _only(cmp: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any]:
    out = dict(cmp)
    out["comparisons"] = [{**c, "metrics": {m: v for m, v in c["metrics"].items()
                                            if m in metrics}} for c in cmp["comparisons"]]
    return out


# -- running it --------------------------------------------------------------------------------

def _start_server(port: int) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    """``annotune up`` on a fresh data folder; returns (process, url, token, folder)."""
    folder = Path(tempfile.mkdtemp(prefix="annotune-walkthrough-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOTUNE_")}
    env.update(ANNOTUNE_DATA_DIR=str(folder / "data"), ANNOTUNE_PORT=str(port),
               ANNOTUNE_FIRST_ADMIN_EMAIL="admin@example.com",
               ANNOTUNE_FIRST_ADMIN_PASSWORD="walkthrough-pass-1")
    if os.environ.get("ANNOTUNE_LOCAL_MODEL_CACHE"):
        env["ANNOTUNE_LOCAL_MODEL_CACHE"] = os.environ["ANNOTUNE_LOCAL_MODEL_CACHE"]
    log = open(folder / "up.log", "wb")  # noqa: SIM115 - held for the process's lifetime
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"annotune up did not start; see {folder / 'up.log'}")
        time.sleep(0.5)
    token = subprocess.run([sys.executable, "-m", "service.cli", "token", "create",
                            "admin@example.com"], cwd=ROOT, env=env, capture_output=True,
                           text=True, check=True).stdout.strip().splitlines()[-1]
    return proc, url, token, folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running annotune (default: from `annotune login`)")
    parser.add_argument("--token", help="an API token (default: from `annotune login`)")
    parser.add_argument("--start", action="store_true",
                        help="start a fresh `annotune up` in a temporary data folder")
    parser.add_argument("--port", type=int, default=8191, help="with --start")
    parser.add_argument("--method", default="lora", choices=("lora", "qlora"))
    parser.add_argument("--steps", type=int, default=DEFAULT_HP["max_steps"])
    parser.add_argument("--limit", type=int, default=None, help="use the first N abstracts")
    parser.add_argument("--no-round-two", action="store_true")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    proc = None
    if args.start:
        proc, url, token, folder = _start_server(args.port)
        print(f"annotune up at {url}, data in {folder}", flush=True)
        api = Client(url, token, timeout=600)
    else:
        api = Client.from_config(args.url, args.token, timeout=600)
    records = corpus.load()
    if args.limit:
        records = records[: args.limit // 2] + [r for r in records if r["lang"] == "en"][
            : args.limit - args.limit // 2]
    started = time.monotonic()
    load = os.getloadavg()
    try:
        result = run(api, records=records, method=args.method,
                     hyperparameters={"max_steps": args.steps},
                     round_two=not args.no_round_two)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
    total = time.monotonic() - started
    print(f"done in {total / 60:.1f} min on {os.cpu_count()} CPUs; load average (1 min) at "
          f"the start {load[0]:.1f}, at the end {os.getloadavg()[0]:.1f}", flush=True)
    if proc is not None:  # the server and its workers have exited: their CPU time is known
        import resource

        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = used.ru_utime + used.ru_stime
        print(f"CPU time of annotune (API and workers): {cpu / 60:.1f} min, i.e. at least "
              f"{cpu / 60 / (os.cpu_count() or 1):.1f} min of wall time on these "
              f"{os.cpu_count()} CPUs with nothing else running", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "seconds": total}, default=str,
                                              ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
