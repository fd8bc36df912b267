"""In Chromium: the training form has a steps field; a job page draws the loss chart with a step
axis and shows no placeholder vLLM command when no merged model was written."""
from __future__ import annotations

from service.models import JobEvent, TrainingJob
from tests.evaluation.test_service import ready_version
from tests.support.browser import browser, login, needs_chromium  # noqa: F401  (fixture)
from tests.support.live_server import live_server  # noqa: F401  (fixture)

pytestmark = needs_chromium


def test_training_pages(browser, live_server, client, db, factories):  # noqa: F811
    owner, pid, vid = ready_version(client, db, factories, n=8)
    job = TrainingJob(project_id=pid, dataset_version_id=vid, base_model="smollm2-135m-instruct",
                      method="lora", status="succeeded", step=40, total_steps=40, artifacts={
                          "serve_commands": {"lora": "vllm serve base --enable-lora --lora-modules a=/x",
                                             "merged": "vllm serve <merged-model-dir> --served-model-name a"}})
    db.add(job)
    db.flush()
    db.add_all([JobEvent(job_id=job.id, kind="metrics", step=s, loss=2.0 - s / 40, message=f"step {s}")
                for s in (10, 20, 30, 40)])
    db.commit()
    page = login(browser, live_server, owner.email)
    page.goto(f"/projects/{pid}/training")
    assert page.locator("#new-training [name=max_steps]").count() == 1
    page.goto(f"/projects/{pid}/training/{job.id}")
    page.wait_for_selector("#loss-chart polyline")
    ticks = page.eval_on_selector_all("#loss-chart text.step-tick", "els => els.map(e => e.textContent)")
    assert ticks == ["0", "10", "20", "30", "40"]
    assert "<merged-model-dir>" not in page.inner_text("main")
    assert page.locator("[data-serve=lora]").count() == 1
    assert page.js_errors == []
