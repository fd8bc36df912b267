"""End to end on the embedded default, as a new user would: `annotune up`, then REST only.

Document upload → local SmolLM2 generation → import of the course's keyword file → bulk accept →
dataset version → ShareGPT export (checked with `datasets`) → QLoRA training of SmolLM2 on CPU
(a few steps) with evaluation of base and fine-tuned → comparison. Run by hand:

    .venv/bin/python bench/e2e.py            # a fresh data dir under /tmp, port 8190
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

import httpx

ROOT = Path(__file__).resolve().parents[1]
DOC = """# 甲状腺超声

结节性甲状腺肿(NG)合并甲状腺微小癌(TMC)的超声声像图特点：低回声、无声晕、有微小钙化。

## Methods

We reviewed 64 patients with nodular goitre and thyroid microcarcinoma confirmed by pathology.
"""
KEYWORDS = [("目的分析结节性甲状腺肿合并甲状腺微小癌的超声声像图特点", "结节性甲状腺肿;甲状腺微小癌;超声"),
            ("大语言模型的低秩适配方法可以降低微调成本", "大语言模型;低秩适配;微调"),
            ("四比特量化与双重量化减少显存占用", "量化;双重量化;显存"),
            ("vLLM 部署合并后的模型并提供接口", "vLLM;部署;接口")]


def wait(fn, what: str, timeout: float = 900, every: float = 2.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8190)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data = Path(args.data_dir or tempfile.mkdtemp(prefix="annotune-e2e-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANNOTUNE_")}
    env.update(ANNOTUNE_DATA_DIR=str(data / "data"), ANNOTUNE_PORT=str(args.port),
               ANNOTUNE_FIRST_ADMIN_EMAIL="admin@example.com", ANNOTUNE_FIRST_ADMIN_PASSWORD="admin-pass-1")
    log = open(data / "up.log", "wb")  # noqa: SIM115 - held for the process's lifetime
    up = subprocess.Popen([sys.executable, "-m", "service.cli", "up"], cwd=ROOT, env=env,
                          stdout=log, stderr=subprocess.STDOUT)
    t0 = time.time()
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait(lambda: _ok(f"{base}/readyz"), "the API", 120, 0.5)
        token = subprocess.run([sys.executable, "-m", "service.cli", "token", "create",
                                "admin@example.com"], cwd=ROOT, env=env, capture_output=True,
                               text=True, check=True).stdout.strip()
        api = httpx.Client(base_url=f"{base}/api/v1", headers={"Authorization": f"Bearer {token}"},
                           timeout=60)
        pid = api.post("/projects", json={"name": "keywords"}).json()["id"]
        p = f"/projects/{pid}"
        doc = api.post(f"{p}/documents", files=[("files", ("thyroid.md", DOC.encode(), "text/markdown"))]
                       ).json()["results"][0]["document_id"]
        wait(lambda: api.get(f"{p}/documents/{doc}").json()["status"] == "parsed", "parsing")
        print(f"[{time.time() - t0:5.0f}s] document parsed")

        local = next(x for x in api.get(f"{p}/providers").json()["items"] if x["kind"] == "local")
        tpl = next(t for t in api.get(f"{p}/templates", params={"limit": 500}).json()["items"]
                   if t["name"] == "keywords.zh")
        job = api.post(f"{p}/generation-jobs", json={"template_id": tpl["id"], "provider_id": local["id"],
                                                     "params": {"sampling": {"max_tokens": 24}}}).json()
        job = wait(lambda: (j := api.get(f"{p}/generation-jobs/{job['id']}").json())["status"]
                   in ("succeeded", "failed") and j, "generation")
        print(f"[{time.time() - t0:5.0f}s] generation {job['status']}: {job['done_units']} units, "
              f"{job['completion_tokens']} completion tokens")

        rows = [{"conversation": [{"human": f"抽取出下文中的关键词：\n{text} ({i})", "assistant": kw}]}
                for i in range(6) for text, kw in KEYWORDS]
        body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows).encode()
        imp = api.post(f"{p}/imports", files={"file": ("keywords_data_train.jsonl", body)}, data={
            "mode": "strict", "mapping": json.dumps({"list_field": "conversation", "user": "human",
                                                      "assistant": "assistant"})}).json()
        imp = wait(lambda: (i := api.get(f"{p}/imports/{imp['id']}").json())["status"] != "queued"
                   and i["status"] != "running" and i, "import")
        print(f"[{time.time() - t0:5.0f}s] import {imp['status']}: {imp['imported']} samples")
        api.post(f"{p}/samples-bulk", json={"filter": {"status": ["pending"]}, "status": "accepted"})

        ds = api.post(f"{p}/datasets", json={"name": "keywords"}).json()
        v = api.post(f"{p}/datasets/{ds['id']}/versions", json={
            "split": {"train": 0.7, "validation": 0.1, "test": 0.2}, "seed": 42}).json()
        vurl = f"{p}/datasets/{ds['id']}/versions/{v['id']}"
        v = wait(lambda: (x := api.get(vurl).json())["status"] == "ready" and x, "version")
        print(f"[{time.time() - t0:5.0f}s] version v{v['number']} ready: {v['counts']}")
        api.post(f"{vurl}/exports", json={"format": "sharegpt"})
        wait(lambda: api.get(f"{vurl}/exports/sharegpt").json()["status"] == "ready", "export")
        zipped = api.get(f"{vurl}/exports/sharegpt/download").content
        out = data / "export"
        zipfile.ZipFile(io.BytesIO(zipped)).extractall(out)
        info = json.loads(next(out.rglob("dataset_info.json")).read_text())
        from datasets import load_dataset

        for entry in info.values():
            f = next(out.rglob(entry["file_name"]))
            n = len(load_dataset("json", data_files=str(f), split="train"))
            print(f"           {entry['file_name']}: {n} records, formatting={entry['formatting']}")

        tj = api.post(f"{p}/training-jobs", json={
            "dataset_version_id": v["id"], "base_model": "smollm2-135m-instruct", "method": "qlora",
            "hyperparameters": {"max_steps": 4, "batch_size": 2, "max_seq_length": 128,
                                "logging_steps": 1, "save_steps": 2, "learning_rate": 0.0005},
            "evaluate_after": True}).json()
        tj = wait(lambda: (x := api.get(f"{p}/training-jobs/{tj['id']}").json())["status"]
                  in ("succeeded", "failed", "cancelled") and x, "training", 1800, 5)
        print(f"[{time.time() - t0:5.0f}s] training {tj['status']} at step {tj['step']}: "
              f"{tj.get('error') or tj['artifacts'].get('serve_commands')}")
        losses = [e["loss"] for e in api.get(f"{p}/training-jobs/{tj['id']}/events").json()["items"]
                  if e["kind"] == "metrics"]
        print(f"           losses: {losses}")
        runs = wait(lambda: (r := api.get(f"{p}/eval-runs", params={"training_job_id": tj["id"]}).json())
                    and len(r["items"]) == 2 and all(x["status"] in ("succeeded", "failed") for x in r["items"])
                    and r, "evaluation", 1800, 5)
        ids = ",".join(str(r["id"]) for r in sorted(runs["items"], key=lambda r: r["id"]))
        cmp = api.get(f"{p}/eval-compare", params={"runs": ids}).json()
        print(f"[{time.time() - t0:5.0f}s] evaluation: " + json.dumps(
            {r["name"]: r["aggregate"] for r in runs["items"]}, ensure_ascii=False)[:600])
        print(f"           compare page: {base}/projects/{pid}/evaluation/compare?runs={ids}")
        for comp in cmp.get("comparisons", []):
            for name, m in comp["metrics"].items():
                print(f"           {name:12s} base {m['baseline_mean']:8.3f} -> tuned {m['mean']:8.3f} "
                      f"delta {m['delta']:+8.3f} [95% CI {m['ci_low']:+.3f}, {m['ci_high']:+.3f}] "
                      f"w/t/l {m['win']}/{m['tie']}/{m['loss']}")
        print(f"done in {time.time() - t0:.0f}s; data in {data}")
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
        log.close()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
