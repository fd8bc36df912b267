"""Real headless Chromium against the live app: the coverage view shows per-leaf counts and
follows a bulk accept made on the samples page filtered by a leaf."""
# ruff: noqa: F811  (pytest fixtures imported from tests.support.browser)
from __future__ import annotations

from sqlalchemy import select

from service.diversity import tree
from service.models import Document, Sample
from tests.support.browser import browser, login, needs_chromium  # noqa: F401  (fixture)

pytestmark = needs_chromium


def _row(page, leaf: int) -> dict[str, str]:
    row = page.locator(f'table[data-testid="coverage"] tr[data-leaf="{leaf}"]')
    return {k: row.locator(f'[data-testid="leaf-{k}"]').inner_text()
            for k in ("samples", "accepted", "share")}


def test_coverage_shows_per_leaf_counts_and_follows_a_bulk_accept(browser, live_server, db,
                                                                  factories):
    owner = factories.make_user(db)
    project = factories.make_project(db, owner, name="coverage")
    spec = tree.normalize_spec([{"name": "Fine-tuning", "children": ["LoRA", "QLoRA"]},
                                {"name": "Serving <b>fast</b>", "children": ["Batching"]}])
    leaves = {path: i for i, path in tree.add_tree(db, project_id=project.id, spec=spec)}
    lora, qlora = leaves["Fine-tuning › LoRA"], leaves["Fine-tuning › QLoRA"]
    for i in range(3):
        db.add(Sample(project_id=project.id, domain_leaf_id=lora, status="pending", version=1,
                      messages=[{"role": "user", "content": f"LoRA rank {i}?"},
                                {"role": "assistant", "content": "Small."}]))
    db.add(Sample(project_id=project.id, domain_leaf_id=qlora, status="accepted", version=1,
                  messages=[{"role": "user", "content": "QLoRA bits?"},
                            {"role": "assistant", "content": "Four."}]))
    db.add(Sample(project_id=project.id, status="pending", version=1,
                  messages=[{"role": "user", "content": "Untagged?"},
                            {"role": "assistant", "content": "Yes."}]))
    db.commit()

    page = login(browser, live_server, owner.email)
    page.goto(f"/projects/{project.id}/coverage")
    assert _row(page, lora) == {"samples": "3", "accepted": "0", "share": "0%"}
    assert _row(page, qlora) == {"samples": "1", "accepted": "1", "share": "100%"}
    assert page.inner_text('[data-testid="untagged"]') == "1"
    assert "Serving <b>fast</b> › Batching" in page.inner_text('[data-testid="empty-leaves"]')
    assert page.locator('[data-testid="coverage-chart"] .bar-row').count() == 3
    width = page.locator(f'[data-testid="coverage-chart"] .bar-row[data-leaf="{lora}"] .bar-fill')
    assert width.evaluate("(el) => el.style.width") == "100%"

    # the leaf's samples, accepted in bulk from the samples page
    page.click(f'table[data-testid="coverage"] tr[data-leaf="{lora}"] a')
    page.wait_for_url(f"**/samples?domain_leaf_id={lora}")
    page.select_option("#bulk-scope", "all")
    page.select_option("#bulk-action", "status")
    page.select_option("#bulk-status", "accepted")
    page.click("#bulk-go")
    page.wait_for_selector("#confirm:not([hidden])")
    assert "3 sample(s)" in page.inner_text('[data-testid="confirm-text"]')
    page.click("#confirm-ok")
    page.wait_for_function("() => document.getElementById('bulk-result').textContent"
                           ".includes('Changed 3 of 3')")

    page.goto(f"/projects/{project.id}/coverage")
    assert _row(page, lora) == {"samples": "3", "accepted": "3", "share": "100%"}
    assert _row(page, qlora)["accepted"] == "1"
    db.expire_all()
    assert db.query(Sample).filter(Sample.status == "pending").count() == 1  # the untagged one
    assert page.js_errors == []


def test_tree_and_pairs_edited_in_the_page(browser, live_server, db, factories):
    from service.diversity import service as diversity_service
    from service.models import DomainNode, GAPair
    from tests.diversity.conftest import make_documents

    owner = factories.make_user(db)
    project = factories.make_project(db, owner, name="edit")
    make_documents(db, project.id, docs=1, chunks=1)
    doc_id = db.scalar(select(Document.id).where(Document.project_id == project.id))
    leaves = tree.add_tree(db, project_id=project.id,
                           spec=tree.normalize_spec([{"name": "A", "children": ["a1", "a2"]}]))
    pair = diversity_service.create_pair(db, project_id=project.id, document_id=doc_id,
                                         genre="exam question", audience="student")
    db.commit()
    page = login(browser, live_server, owner.email)
    page.goto(f"/projects/{project.id}/coverage")
    # add a node under A, delete a2 (the confirm dialog is accepted)
    page.fill("#node-name", "a3 <script>alert(1)</script>")
    page.select_option("#node-parent", label="A")
    with page.expect_navigation():
        page.click("#node-add")
    page.wait_for_selector("li[data-node] >> text=a3 <script>alert(1)</script>")
    with page.expect_navigation():
        page.click(f'li[data-node="{leaves[1][0]}"] button[data-act="delete"]')
    page.wait_for_selector(f'li[data-node="{leaves[1][0]}"]', state="detached")
    db.expire_all()
    names = set(db.scalars(select(DomainNode.name).where(DomainNode.project_id == project.id)))
    assert names == {"A", "a1", "a3 <script>alert(1)</script>"}
    # edit a pair, add one; an empty genre is refused naming the field
    row = page.locator(f'#ga-pairs tr[data-pair="{pair.id}"]')
    row.locator(".pair-audience").fill("teacher")
    with page.expect_navigation():  # saved, then the page reloads
        row.locator('button[data-pair-act="save"]').click()
    assert page.locator(f'#ga-pairs tr[data-pair="{pair.id}"] .pair-audience').input_value() == "teacher"
    page.fill("#pair-genre", "")
    page.fill("#pair-audience", "engineer")
    page.click("#pair-add")
    page.wait_for_function("() => document.getElementById('tree-result').textContent"
                           ".startsWith('Genre')")
    page.fill("#pair-genre", "troubleshooting")
    page.click("#pair-add")
    page.wait_for_selector("#ga-pairs tr[data-pair] >> nth=1")
    db.expire_all()
    got = {(p.genre, p.audience) for p in db.scalars(select(GAPair))}
    assert got == {("exam question", "teacher"), ("troubleshooting", "engineer")}
    assert page.js_errors == []


def test_the_generation_form_fans_out_over_chosen_pairs_for_a_leaf(browser, live_server, db,
                                                                   factories, client):
    from service.diversity import service as diversity_service
    from tests.diversity.conftest import make_documents, make_provider
    from tests.diversity.test_variants import ga_responder
    from tests.support.openai_server import FakeOpenAIServer

    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "fan"}, headers=owner.headers).json()["id"]
    make_documents(db, pid, docs=1, chunks=2)
    doc_id = db.scalar(select(Document.id).where(Document.project_id == pid))
    pairs = [diversity_service.create_pair(db, project_id=pid, document_id=doc_id, genre=g,
                                           audience=a).id
             for g, a in (("exam question", "student"), ("FAQ", "customer"), ("memo", "boss"))]
    leaf = tree.add_tree(db, project_id=pid, spec=tree.normalize_spec(
        [{"name": "Fine-tuning", "children": ["LoRA"]}]))[0][0]
    db.commit()
    with FakeOpenAIServer(responder=ga_responder) as server:
        make_provider(client, owner, pid, server.url)
        page = login(browser, live_server, owner.email)
        page.goto(f"/projects/{pid}/generation")
        form = page.locator("#new-job")
        options = form.locator("[name=template_id] option").all_inner_texts()
        assert not any("domain_tree" in o or "topic_" in o for o in options)  # diversity steps
        form.locator("[name=template_id]").select_option(label=next(
            o for o in options if o.startswith("question_ga.en")))
        form.locator("[name=n]").fill("1")
        form.locator("[name=document_ids]").select_option([str(doc_id)])
        form.locator("[name=ga_pair_ids]").select_option([str(pairs[0]), str(pairs[1])])
        form.locator("[name=domain_leaf_id]").select_option(str(leaf))
        page.click("#plan-job")
        page.wait_for_function("() => document.querySelector('[data-testid=job-plan]')"
                               ".textContent.includes('4 unit(s)')")
        page.click("#start-job")
        page.wait_for_function("() => document.querySelector('#jobs tr[data-job]') !== null")
        job = _finished_job(db)
        assert job.total_units == 4 and job.params["ga_pair_ids"] == pairs[:2]
    samples = db.scalars(select(Sample).where(Sample.generation_job_id == job.id)).all()
    assert len(samples) == 4 and {s.domain_leaf_id for s in samples} == {leaf}
    assert {s.provenance["generation"]["ga_pair"]["audience"] for s in samples} == {"student",
                                                                                   "customer"}
    assert page.js_errors == []


def _finished_job(db):
    from service.models import GenerationJob
    from tests.support import worker as w

    def latest():
        job = db.scalar(select(GenerationJob).order_by(GenerationJob.id.desc()).limit(1))
        return job if job is not None and job.status == "succeeded" else None

    return w.wait_for(db, latest, 30, "the job to finish")
