"""The keyword walkthrough (examples/keywords) at reduced size, against a live server: once
through the Python client (the walkthrough's own ``run``), once through the ``annotune`` CLI,
so the loop documents -> samples -> version -> export -> training -> evaluation -> comparison
-> round two can never silently break. A tiny random model stands in for SmolLM2; tasks run
in the server process (eager), as in the other API tests."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from service.client import ApiError, Client, password_login
from tests.support.factories import PASSWORD
from tests.support.live_server import live_server  # noqa: F401  (fixture)

pytest.importorskip("torch")
pytestmark = [pytest.mark.ml]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "keywords"))

import corpus
import walkthrough

TINY_HP = {"max_steps": 2, "batch_size": 2, "max_seq_length": 768, "logging_steps": 1,
           "lora_r": 8, "lora_alpha": 16}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from workers.training.models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _records(n_per_lang: int) -> list[dict]:
    records = corpus.load()
    return [r for r in records if r["lang"] == "zh"][:n_per_lang] + \
        [r for r in records if r["lang"] == "en"][:n_per_lang]


def test_corpus_is_faithful():
    records = corpus.load()
    assert len(records) >= 300 and {r["lang"] for r in records} == {"zh", "en"}
    assert len({r["abstract"] for r in records}) == len(records)
    for r in records:
        assert 3 <= len(r["keywords"]) <= 4
        assert all(k.lower() in r["abstract"].lower() for k in r["keywords"]), r
    assert corpus.build() == records  # the shipped file is what the generator writes


def test_walkthrough_through_the_client(live_server, db, factories, tiny_model):  # noqa: F811
    owner = factories.make_actor(db)
    with Client(live_server.url, owner.token, progress=False, poll=0.2, timeout=300) as api:
        result = walkthrough.run(api, records=_records(5), base_model=str(tiny_model),
                                 drafts_per_lang=1, hyperparameters=TINY_HP, max_tokens=8,
                                 draft_tokens=8, split={"train": 0.5, "validation": 0.0,
                                                        "test": 0.5})
    version = result["version"]
    assert version["stratify_by"] == "document" and version["counts"]["total"] == 10
    assert result["job"]["status"] == "succeeded" and result["losses"]
    assert [r["status"] for r in result["runs"]] == ["succeeded", "succeeded"]
    metrics = result["compare"]["comparisons"][0]["metrics"]
    assert {"keyword_f1", "rouge-l"} <= set(metrics)
    assert len(result["drafts"]) == 2 and len(result["round_two"]) == 2
    assert {s["provenance"]["generation"]["model"] for s in result["round_two"]} == {
        result["job"]["artifacts"]["adapter_dir"]}


def _cli(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "service.cli", *args], check=False, cwd=ROOT,
                          env=env,
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def _json(proc: subprocess.CompletedProcess):
    return json.loads(proc.stdout)


def test_the_loop_through_the_cli(live_server, db, factories, tiny_model, tmp_path):  # noqa: F811
    owner = factories.make_actor(db)
    env = {**os.environ, "ANNOTUNE_CONFIG": str(tmp_path / "cli.json")}
    env.pop("ANNOTUNE_URL", None)
    env.pop("ANNOTUNE_TOKEN", None)
    url = live_server.url

    # login: a bad token is refused (exit 1, the API's envelope); a good one is stored, private
    bad = _cli(env, "login", url, "--token", "atk_nope_nope", "--json", ok=False)
    assert bad.returncode == 1 and json.loads(bad.stderr)["error"]["code"]
    assert not (tmp_path / "cli.json").exists()
    signed_in = password_login(url, owner.email, PASSWORD)  # the browser's way, for `--email`
    assert Client(url, signed_in).me()["email"] == owner.email
    _cli(env, "login", url, "--token", owner.token)
    assert stat.S_IMODE((tmp_path / "cli.json").stat().st_mode) == 0o600
    pid = _json(_cli(env, "projects", "create", "cli walkthrough", "--json"))["id"]
    _cli(env, "login", url, "--token", owner.token, "--project", str(pid))

    records = _records(3)
    files = []
    for r in records:
        path = tmp_path / f"{r['id']}.txt"
        path.write_text(r["abstract"], encoding="utf-8")
        files.append(str(path))
    uploaded = _json(_cli(env, "docs", "upload", *files, "--json"))
    assert [d["status"] for d in uploaded["documents"]] == ["parsed"] * len(records)

    with Client(url, owner.token) as api:  # the template and the in-worker tiny model
        api.create_template(pid, name="keywords-zh", kind="keywords", lang="zh",
                            text=corpus.PROMPTS["zh"] + "{{ text }}",
                            parser={"kind": "regex", "pattern": walkthrough.KEYWORD_LINE,
                                    "flags": 2, "group": "keywords"})
        provider = api.create_provider(pid, name="tiny", kind="local", model=str(tiny_model))
    zh_docs = [d["id"] for d in uploaded["documents"] if d["filename"].startswith("zh-")]
    job = _json(_cli(env, "generate", "--template", "keywords-zh", "--provider",
                     str(provider["id"]), "--documents", ",".join(map(str, zh_docs)),
                     "--max-tokens", "8", "--param", "keep_truncated=true", "--json"))
    assert job["status"] == "succeeded" and job["total_units"] == len(zh_docs)

    refs = tmp_path / "references.jsonl"
    refs.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": corpus.prompt(r)},
        {"role": "assistant", "content": corpus.answer(r)}]}, ensure_ascii=False) + "\n"
        for r in records), encoding="utf-8")
    imported = _json(_cli(env, "samples", "import", str(refs), "--json"))
    assert imported["status"] == "succeeded" and imported["imported"] == len(records)
    _cli(env, "samples", "bulk", "--set-status", "accepted", "--import-job",
         str(imported["id"]), "--json")
    version = _json(_cli(env, "dataset", "freeze", "--dataset", "kw", "--train", "0.5",
                         "--validation", "0", "--test", "0.5", "--seed", "3", "--stratify",
                         "document", "--json"))
    assert version["status"] == "ready" and version["counts"]["total"] == len(records)
    export = _json(_cli(env, "dataset", "export", "--dataset", str(version["dataset_id"]),
                        "--version", str(version["id"]), "--format", "sharegpt", "--out",
                        str(tmp_path / "kw.zip"), "--json"))
    assert export["status"] == "ready"
    assert "dataset_info.json" in {Path(n).name for n in
                                   zipfile.ZipFile(tmp_path / "kw.zip").namelist()}

    hp = [a for k, v in TINY_HP.items() for a in ("--hp", f"{k}={v}")]
    trained = _json(_cli(env, "train", "--version", str(version["id"]), "--base-model",
                         str(tiny_model), *hp, "--no-validation", "--json"))
    assert trained["status"] == "succeeded" and trained["step"] == 2
    common = ["--version", str(version["id"]), "--metrics", "keywords,rouge", "--max-tokens", "8",
              "--json"]
    base = _json(_cli(env, "eval", "--base-model", str(tiny_model), *common))
    tuned = _json(_cli(env, "eval", "--training-job", str(trained["id"]), *common))
    assert base["status"] == tuned["status"] == "succeeded"
    cmp = _json(_cli(env, "compare", str(base["id"]), str(tuned["id"]), "--json"))
    assert "keyword_f1" in cmp["comparisons"][0]["metrics"]
    text = _cli(env, "compare", str(base["id"]), str(tuned["id"])).stdout
    assert "keyword_f1" in text and "paired bootstrap" in text
    # a random tiny model does not beat its base: CI can gate on the interval
    gate = _cli(env, "compare", str(base["id"]), str(tuned["id"]), "--require-better",
                "keyword_f1", ok=False)
    assert gate.returncode == 5, gate.stdout

    # round two from the CLI; vLLM is refused clearly where it is not installed
    registered = _json(_cli(env, "provider", "register", str(trained["id"]), "--json"))
    assert registered["training_job_id"] == trained["id"]
    if shutil.which("vllm") is None:
        served = _cli(env, "serve", str(trained["id"]), ok=False)
        assert served.returncode == 6 and "vLLM is not installed" in served.stdout
        assert "vllm serve" in served.stdout and "--enable-lora" in served.stdout

    # where vLLM is installed: serve starts it, waits for /v1/models, registers the provider,
    # and removes it when stopped (a stand-in `vllm` that only answers /v1/models)
    _serve_with_a_stand_in(env, url, owner.token, pid, trained["id"], tmp_path)

    # a refused call: exit 1 and the API's error envelope on stderr
    wrong = _cli(env, "eval", "--version", "999999", "--base-model", str(tiny_model), "--json",
                 ok=False)
    assert wrong.returncode == 1
    envelope = json.loads(wrong.stderr)["error"]
    assert envelope["details"][0]["field"] == "body.dataset_version_id"
    with pytest.raises(ApiError) as info, Client(url, owner.token) as api:
        api.get(f"/projects/{pid}/eval-runs/999999")
    assert info.value.status == 404 and info.value.code == "run_not_found"


STAND_IN = """#!{python}
import http.server, json, sys
args = sys.argv[1:]
assert args[0] == "serve" and "--enable-lora" in args, args
host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({{"object": "list", "data": [{{"id": "stand-in"}}]}}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer((host, port), Models).serve_forever()
"""


def _serve_with_a_stand_in(env, url, token, pid, job_id, tmp_path):
    import signal

    from tests.support.live_server import free_port

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(STAND_IN.format(python=sys.executable))
    (bin_dir / "vllm").chmod(0o755)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", str(job_id), "--port",
                             str(port)], cwd=ROOT, env={**env, "PATH": f"{bin_dir}:{env['PATH']}"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "registered" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        with Client(url, token) as api:
            served = [p for p in api.list_providers(pid)
                      if p["base_url"] == f"http://127.0.0.1:{port}/v1"]
            assert len(served) == 1 and served[0]["kind"] == "openai"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            assert served[0]["id"] not in [p["id"] for p in api.list_providers(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
