"""In Chromium, with a real Celery worker: an import, a dataset version build and an evaluation
run each show a progress bar that moves while the job runs and finishes full, on the page that
was open before the job started, without a reload (service/static/jobs_live.js)."""
from __future__ import annotations

import io
import json
import os
import random
import string
import time

import pytest
from sqlalchemy import insert

from service.models import Sample
from service.samples.store import message_columns
from tests.support import worker as w
from tests.support.browser import browser, login, needs_chromium  # noqa: F401  (fixture)
from tests.support.live_server import live_server  # noqa: F401  (fixture)
from tests.support.openai_server import FakeOpenAIServer
from tests.test_resend import broker

pytestmark = [
    *needs_chromium, pytest.mark.worker,
    pytest.mark.skipif(not w.redis_available(), reason="no Redis"),
    # SQLite has one writer: an import's or a build's progress shows only at its end there
    pytest.mark.skipif(not os.environ.get("ANNOTUNE_DATABASE_URL", "").startswith("postgresql"),
                       reason="progress while an import or build runs needs PostgreSQL"),
]

IMPORT_LINES = 8_000  # ~15 s on a loaded 2-core machine; progress is written every 1,000
# progress is written every 5,000 samples (service.datasets.service.BATCH) and the page polls every
# 1.5 s: at 30k a quiet machine copied them in under 1.5 s and the bar went from 0 to full (CI,
# 2026-12-02 22:05); the leakage check after the copy shows no progress of its own
BUILD_SAMPLES = 60_000
EVAL_ITEMS = 24


def _conversations(n: int, seed: int) -> list[list[dict[str, str]]]:
    """Unlike one another (random words), so the build's leakage check has few candidates."""
    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9)))
                        for _ in range(k))
    return [[{"role": "user", "content": words(12) + "?"},
             {"role": "assistant", "content": words(16) + "."}] for _ in range(n)]


def _jsonl(n: int, seed: int) -> bytes:
    return "\n".join(json.dumps({"messages": m}) for m in _conversations(n, seed)).encode()


# what the page shows: the bar's value and max (null while indeterminate), and the status text
SAMPLE = """(url) => {
  const el = document.querySelector(`[data-job-url="${url}"]`);
  const bar = el.querySelector("progress");
  return {value: bar.hasAttribute("value") ? bar.value : null, max: bar.max,
          status: el.dataset.status, eta: el.querySelector(".eta").textContent,
          marker: window.__notReloaded === true};
}"""


def test_import_build_and_eval_bars_move_and_finish_without_a_reload(
        browser, live_server, client, db, factories, monkeypatch, tmp_path):  # noqa: F811
    owner = factories.make_actor(db)
    h = owner.headers
    pid = client.post("/api/v1/projects", json={"name": "progress"}, headers=h).json()["id"]
    # made now: pending samples for the build (inserted in bulk), a small version for the eval
    rows = [{"project_id": pid, "status": "pending", "source": "manual", "version": 1,
             "tags": [], "scores": {}, "provenance": {},
             **message_columns(m)} for m in _conversations(BUILD_SAMPLES, 1)]
    db.execute(insert(Sample), rows)
    db.commit()
    for i in range(2 * EVAL_ITEMS):
        client.post(f"/api/v1/projects/{pid}/samples", headers=h, json={
            "status": "accepted", "messages": [{"role": "user", "content": f"q{i}"},
                                               {"role": "assistant", "content": f"a{i}"}]})
    ds = client.post(f"/api/v1/projects/{pid}/datasets", headers=h, json={"name": "d"}).json()
    versions = f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions"
    small = client.post(versions, headers=h, json={
        "split": {"train": 0.5, "validation": 0.0, "test": 0.5}}).json()
    small = client.get(f"{versions}/{small['id']}", headers=h).json()  # built as it was sent
    assert small["status"] == "ready" and small["progress_done"] == small["progress_total"], small

    w.purge()
    with FakeOpenAIServer(latency=0.25, responder=lambda r: "an answer") as server:
        prov = client.post(f"/api/v1/projects/{pid}/providers", headers=h, json={
            "name": "slow", "base_url": server.url, "model": "m", "max_concurrency": 1}).json()
        # sent through Redis: they wait there until the worker below starts
        with broker(monkeypatch, w.REDIS_URL):
            imp = client.post(f"/api/v1/projects/{pid}/imports", headers=h, data={"mode": "strict"},
                              files={"file": ("big.jsonl", io.BytesIO(_jsonl(IMPORT_LINES, 2)))})
            big = client.post(versions, headers=h, json={"filter": {"status": ["pending"]}})
            run = client.post(f"/api/v1/projects/{pid}/eval-runs", headers=h, json={
                "name": "slow", "dataset_version_id": small["id"], "model_kind": "endpoint",
                "provider_id": prov["id"], "generation": {"max_tokens": 16}, "metrics": ["exact_match"]})
        assert imp.status_code == 202 and imp.json()["status"] == "queued", imp.text
        assert big.status_code == 201 and big.json()["status"] == "queued", big.text
        assert run.status_code == 201 and run.json()["status"] == "queued", run.text

        # each page, and the REST address its bar follows
        pages = {
            "import": (f"/projects/{pid}/imports/{imp.json()['id']}",
                       f"/api/v1/projects/{pid}/imports/{imp.json()['id']}"),
            "build": (f"/projects/{pid}/datasets/{ds['id']}/versions/{big.json()['id']}",
                      f"{versions}/{big.json()['id']}"),
            "versions": (f"/projects/{pid}/datasets/{ds['id']}", f"{versions}/{big.json()['id']}"),
            "eval": (f"/projects/{pid}/evaluation/runs/{run.json()['id']}",
                     f"/api/v1/projects/{pid}/eval-runs/{run.json()['id']}"),
        }
        opened = {}
        for kind, (path, _) in pages.items():
            page = login(browser, live_server, owner.email)
            page.goto(path)
            page.evaluate("() => { window.__notReloaded = true; }")
            opened[kind] = page
        seen: dict[str, list[dict]] = {k: [] for k in pages}
        done_words = {"import": "succeeded", "build": "ready", "versions": "ready",
                      "eval": "succeeded"}
        log = tmp_path / "worker.log"
        with w.running_worker("ingest,generate", concurrency=3, name="progress", log_path=log):
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                for kind, page in opened.items():
                    seen[kind].append(page.evaluate(SAMPLE, pages[kind][1]))
                if all(seen[k][-1]["status"] == done_words[k] for k in pages):
                    break
                time.sleep(0.1)
    for kind, page in opened.items():
        samples = seen[kind]
        last = samples[-1]
        assert last["status"] == done_words[kind], (kind, last, log.read_text()[-3000:])
        assert last["max"] > 0 and last["value"] == last["max"], (kind, last)   # finished full
        assert last["eta"] == ""
        moving = [s for s in samples if s["value"] is not None and 0 < s["value"] < s["max"]]
        assert moving, (kind, samples[:: max(1, len(samples) // 20)])            # it moved...
        assert any(s["eta"].startswith("about ") for s in moving), kind           # ...with an ETA
        assert all(s["marker"] for s in samples), kind                            # never reloaded
        assert page.js_errors == [], page.js_errors
    # what the pages show after the finish, still without a reload
    imp_page = opened["import"]
    assert f"imported {IMPORT_LINES}" in imp_page.inner_text("#import-counts")
    assert imp_page.is_visible("#imported-link")
    assert opened["build"].is_visible("#version-ready")
    assert opened["build"].inner_text("[data-testid=version-status]") == "ready"
    assert opened["eval"].locator("[data-testid=aggregate]").count() == 1
    row = opened["versions"].locator(f"tr[data-version-id='{big.json()['id']}']")
    built = client.get(f"{versions}/{big.json()['id']}", headers=h).json()
    assert row.locator("[data-job-field='counts.train']").inner_text() == str(built["counts"]["train"])
