"""Issue 15's acceptance on exports: data that came from generation (every first-stage kind,
through the fake OpenAI server), from an import and from an edit, frozen into one version and
exported in every format, passes OpenAI's chat-format checks and LLaMA-Factory's loader with
zero drops."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from service.datasets import export as datasets_export
from service.samples import formats, validation
from tests.generation.test_engine import make_chunks
from tests.generation.test_trust import _dialogue, _run, project  # noqa: F401  (fixture)
from tests.support.openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = [{"instruction": "Summarise the passage", "input": "",
             "output": "An ultrasound study of thyroid nodules."},
            {"instruction": "Name the organ", "input": "the passage above",
             "output": "The thyroid."}]
IMPORTED = [
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "导入的问题"}, {"role": "assistant", "content": "导入的回答"}]},
    {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                  {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]},
    {"messages": [{"role": "user", "content": "just one"}, {"role": "assistant", "content": "ok"}]},
]


def responder(req):
    prompt = req["messages"][-1]["content"]
    if "instruction-tuning" in prompt:
        return json.dumps(EXAMPLES)
    if "realistic conversation" in prompt:
        return _dialogue(2)
    if "distinct questions" in prompt:
        return "1. What is studied?\n2. Which organ?"
    if "Answer the question" in prompt:
        return "The thyroid."
    return "ultrasound, thyroid"


def _llamafactory(folder: Path, tmp_path: Path) -> dict:
    from workers.training.models import make_tiny_model

    tokenizer = make_tiny_model(tmp_path / "tiny")
    proc = subprocess.run([sys.executable, "-m", "tests.support.llamafactory_check", str(folder),
                           str(tokenizer), str(tmp_path / f"out-{folder.name}")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and "Dropped invalid example" not in proc.stderr, \
        proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["datasets"]


def _exports(client, db, owner, pid) -> tuple[dict[str, Path], int]:
    """Generate (every first-stage kind), import and edit; accept all; freeze one version and
    export it in every format. Returns each format's folder and the number of samples."""
    h = owner.headers
    base = f"/api/v1/projects/{pid}"
    make_chunks(db, pid, 2)
    with FakeOpenAIServer(responder=responder) as server:
        for template, params in (("instruction.en", {"n": 2}),
                                 ("dialogue.en", {"rounds": 2, "system_prompt": "Be kind."}),
                                 ("question.en", {"n": 2}), ("keywords.en", {})):
            job = _run(client, owner, pid, server, template, params)
            assert job["status"] == "succeeded" and job["failed_units"] == 0, job
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in IMPORTED)
    imported = client.post(f"{base}/imports", headers=h, data={"mode": "strict"},
                           files={"file": ("more.jsonl", io.BytesIO(lines.encode()))}).json()
    assert client.get(f"{base}/imports/{imported['id']}", headers=h).json()["status"] == "succeeded"
    first = client.get(f"{base}/samples", headers=h, params={"limit": 1}).json()["items"][0]
    edited = client.patch(f"{base}/samples/{first['id']}", headers=h, json={
        "version": first["version"], "messages": first["messages"] + [
            {"role": "user", "content": "And in one word?"},
            {"role": "assistant", "content": "Ultrasound."}]})
    assert edited.status_code == 200, edited.text
    accepted = client.post(f"{base}/samples-bulk", headers=h,
                           json={"filter": {}, "status": "accepted"}).json()
    total = 4 + 2 + 4 + 2 + len(IMPORTED)  # examples, dialogues, questions, keywords, imported
    assert accepted["changed"] == total, accepted
    ds = client.post(f"{base}/datasets", headers=h, json={"name": "trust"}).json()
    url = f"{base}/datasets/{ds['id']}/versions"
    version = client.post(url, headers=h, json={
        "split": {"train": 0.8, "validation": 0.1, "test": 0.1}, "seed": 3}).json()
    version = client.get(f"{url}/{version['id']}", headers=h).json()
    assert version["status"] == "ready" and version["counts"]["total"] == total, version
    folders = {}
    for fmt in ("alpaca", "sharegpt", "openai"):
        exp = client.post(f"{url}/{version['id']}/exports", headers=h, json={"format": fmt})
        assert exp.status_code in (200, 201, 202), exp.text
        assert client.get(f"{url}/{version['id']}/exports/{fmt}",
                          headers=h).json()["status"] == "ready"
        folders[fmt] = datasets_export.export_dir(version["id"], fmt)
    return folders, total


def test_generated_imported_and_edited_samples_export_with_zero_drops(client, db, project):  # noqa: F811
    owner, pid = project
    folders, total = _exports(client, db, owner, pid)
    for fmt, folder in folders.items():
        records = [orjson.loads(line) for path in sorted(folder.glob("*.jsonl"))
                   for line in path.read_bytes().splitlines()]
        assert len(records) == total, fmt  # zero drops
        for record in records:
            messages = formats.parse_record(record, fmt)
            assert validation.validate_messages(messages) == [], (fmt, record)
            assert validation.llamafactory_would_drop(messages) is False, (fmt, record)
        if fmt == "openai":
            assert all(set(r) == {"messages"} and all(set(m) == {"role", "content"}
                                                       for m in r["messages"]) for r in records)


@pytest.mark.ml
@pytest.mark.skipif(importlib.util.find_spec("llamafactory") is None,
                    reason="llamafactory is not installed")
def test_llamafactory_loads_every_exported_sample(client, db, project, tmp_path):  # noqa: F811
    owner, pid = project
    folders, total = _exports(client, db, owner, pid)
    for folder in folders.values():
        counts = _llamafactory(folder, tmp_path)
        assert sum(c["tokenized"] for c in counts.values()) == total, counts
        assert all(c["aligned"] == c["valid"] == c["tokenized"] for c in counts.values())
