"""Samples you can trust (issue 15): generated samples pass the one validation gate and are found
by the text search; outputs honour the template's contract; every token is counted."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from service.models import GenerationUnit, Sample
from tests.generation.test_engine import _template_id, make_chunks, qa_responder
from tests.support.openai_server import Fail, FakeOpenAIServer, Reply, rate_limited


@pytest.fixture
def project(db, factories, client):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "trust"}, headers=owner.headers).json()["id"]
    return owner, pid


def _provider(client, owner, pid, server, **extra) -> int:
    resp = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
        "name": "p", "base_url": server.url, "model": "fake-model", "max_concurrency": 1,
        **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _run(client, owner, pid, server, template: str, params: dict | None = None, **provider):
    tid = _template_id(client, owner, pid, template)
    job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                      json={"template_id": tid, "params": params or {},
                            "provider_id": _provider(client, owner, pid, server, **provider)})
    assert job.status_code == 201, job.text
    return client.get(f"/api/v1/projects/{pid}/generation-jobs/{job.json()['id']}",
                      headers=owner.headers).json()


def _units(client, owner, pid, job_id: int) -> list[dict]:
    return client.get(f"/api/v1/projects/{pid}/generation-jobs/{job_id}/units",
                      headers=owner.headers).json()["items"]


def _search(client, owner, pid, q: str) -> list[dict]:
    resp = client.get(f"/api/v1/projects/{pid}/samples", params={"q": q}, headers=owner.headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


# -- A: the gate, the hash and the search text -------------------------------------------------

def test_generated_samples_are_found_by_the_text_search(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 2)
    answer = json.dumps([{"instruction": "安装哪个软件包？", "input": "",
                          "output": "先安装 Nginx 软件包，再配置反向代理。"}], ensure_ascii=False)
    with FakeOpenAIServer(responder=lambda req: answer) as server:
        job = _run(client, owner, pid, server, "instruction.zh", {"n": 1})
    assert job["status"] == "succeeded" and job["done_units"] == 2, job
    found = _search(client, owner, pid, "软件包")
    assert len(found) == 2 and all(s["source"] == "generation" for s in found)
    assert [s["id"] for s in _search(client, owner, pid, "反向代理")] == [s["id"] for s in found]
    assert _search(client, owner, pid, "instruction") == []  # JSON keys never match
    row = db.scalar(select(Sample).where(Sample.id == found[0]["id"]))
    assert row.search_text == "安装哪个软件包?\n先安装 nginx 软件包,再配置反向代理。"  # NFKC
    assert len(row.content_hash) == 64


def test_a_conversation_the_gate_refuses_fails_the_unit_with_the_reason(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 1)
    empty = json.dumps([{"instruction": "Summarise", "input": "", "output": "   "}])
    with FakeOpenAIServer(responder=lambda req: empty) as server:
        job = _run(client, owner, pid, server, "instruction.en", {"n": 1})
    assert job["status"] == "failed" and job["failed_units"] == 1, job
    [unit] = _units(client, owner, pid, job["id"])
    assert unit["error_code"] == "invalid_sample"
    assert unit["error"].startswith("the validation gate refused the sample: messages[1].content")
    assert unit["raw_output"] == empty  # what the model said is kept
    assert db.scalar(select(func.count()).select_from(Sample)) == 0
    assert db.scalar(select(GenerationUnit.attempts)) == 3


# -- B: the template's contract --------------------------------------------------------------

def test_at_most_n_questions_and_examples(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 2)
    responder = qa_responder("1. What is studied?\n2. Which organ?\n3. Which method?\n4. Who?",
                             "The thyroid.")
    with FakeOpenAIServer(responder=responder) as server:
        job = _run(client, owner, pid, server, "question.en", {"n": 1})
    assert job["status"] == "succeeded" and job["done_units"] == 2, job
    samples = client.get(f"/api/v1/projects/{pid}/samples", headers=owner.headers).json()["items"]
    assert [s["messages"][0]["content"] for s in samples] == ["What is studied?"] * 2
    three = json.dumps([{"instruction": f"task {i}", "input": "", "output": f"answer {i}"}
                        for i in range(3)])
    with FakeOpenAIServer(responder=lambda req: three) as server:
        job = _run(client, owner, pid, server, "instruction.en", {"n": 2})
    assert job["done_units"] == 2 and job["failed_units"] == 0, job
    assert db.scalar(select(func.count()).select_from(Sample).where(
        Sample.generation_job_id == job["id"])) == 4  # two chunks, two examples each


def _dialogue(rounds: int) -> str:
    msgs = []
    for i in range(rounds):
        msgs += [{"role": "user", "content": f"question {i}"},
                 {"role": "assistant", "content": f"answer {i}"}]
    return json.dumps({"messages": msgs})


def test_dialogues_have_the_requested_rounds(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 1)
    with FakeOpenAIServer(responder=lambda req: _dialogue(3)) as server:
        server.script(Reply(_dialogue(1)))  # one round short: sent back for repair
        job = _run(client, owner, pid, server, "dialogue.en", {"rounds": 2})
        repair = server.requests[1]["json"]["messages"][-1]["content"]
    assert job["status"] == "succeeded", job
    assert "asked for 2 round(s) (user then assistant), the dialogue has 1" in repair
    [sample] = client.get(f"/api/v1/projects/{pid}/samples", headers=owner.headers).json()["items"]
    assert [m["content"] for m in sample["messages"]] == ["question 0", "answer 0",
                                                          "question 1", "answer 1"]
    [unit] = _units(client, owner, pid, job["id"])
    assert unit["repairs"] == 1 and unit["requests"] == 2


def test_a_shape_that_never_fits_fails_with_a_readable_reason(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 1)
    with FakeOpenAIServer(responder=lambda req: '{"messages": null}') as server:
        job = _run(client, owner, pid, server, "dialogue.en", {"rounds": 2})
    assert job["status"] == "failed", job
    [unit] = _units(client, owner, pid, job["id"])
    assert unit["error_code"] == "wrong_shape" and "NoneType" not in unit["error"]
    assert unit["error"] == ('the answer does not have the shape the template asks for: '
                             'expected {"messages": [...]} (a list of messages), got null')
    assert unit["raw_output"] == '{"messages": null}'
    assert job["failure_reasons"] == {"wrong_shape": 1}
    assert job["error"].startswith("all 1 of 1 unit(s) failed (1 wrong_shape); first error: "
                                   "the answer does not have the shape")



def test_the_jobs_page_shows_why_units_failed(client, db, factories, project):
    owner, pid = project
    make_chunks(db, pid, 1)
    with FakeOpenAIServer(responder=lambda req: '{"messages": "<b>no</b>"}') as server:
        job = _run(client, owner, pid, server, "dialogue.en", {"rounds": 2})
    factories.browser_login(client, owner.email)
    page = client.get(f"/projects/{pid}/generation")
    assert page.status_code == 200
    assert ('<td class="failed" title="all 1 of 1 unit(s) failed (1 wrong_shape); first error: '
            'the answer does not have the shape') in page.text
    assert "<b>no</b>" not in page.text and job["failure_reasons"] == {"wrong_shape": 1}


def test_a_truncated_answer_is_retried_with_a_larger_budget_then_fails(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 2)
    cut = Reply("1. What is stud", finish_reason="length")
    with FakeOpenAIServer(responder=lambda req: "kw1;kw2") as server:
        # unit 1: cut off, then complete with the larger budget; unit 2: cut off twice
        server.script(cut, Reply("kw1;kw2"), cut, cut)
        job = _run(client, owner, pid, server, "keywords.en",
                   {"sampling": {"max_tokens": 50}})
        budgets = [r["json"].get("max_tokens") for r in server.requests]
    assert budgets == [50, 256, 50, 256]  # twice the budget (at least 128), once
    assert job["done_units"] == 1 and job["failed_units"] == 1, job
    done, failed = _units(client, owner, pid, job["id"])
    assert done["status"] == "done" and done["retries"] == 1
    assert failed["status"] == "failed" and failed["error_code"] == "truncated"
    assert failed["attempts"] == 1 and failed["raw_output"] == "1. What is stud"
    assert "also with max_tokens 256" in failed["error"]
    contents = [m["content"] for s in client.get(f"/api/v1/projects/{pid}/samples",
                                                 headers=owner.headers).json()["items"]
                for m in s["messages"]]
    assert "1. What is stud" not in contents and contents[-1] == "kw1;kw2"
    assert job["failure_reasons"] == {"truncated": 1}


# -- C: every token counted --------------------------------------------------------------------

def _assert_accounted(client, owner, pid, job: dict, server: FakeOpenAIServer) -> list[dict]:
    """Recorded == served: the job's counters, the sums of its unit rows, the provider's usage
    and what the fake server counted it sent."""
    job = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job['id']}",
                     headers=owner.headers).json()
    units = _units(client, owner, pid, job["id"])
    served = server.stats()
    assert served["served_prompt_tokens"] > 0
    assert job["prompt_tokens"] == served["served_prompt_tokens"], (job, served)
    assert job["completion_tokens"] == served["served_completion_tokens"], (job, served)
    assert job["requests"] == served["chat_requests"], (job, served)
    for column, unit_column in (("prompt_tokens", "prompt_tokens"), ("requests", "requests"),
                                ("completion_tokens", "completion_tokens"),
                                ("retried", "retries"), ("repairs", "repairs")):
        assert job[column] == sum(u[unit_column] for u in units), column
    usage = client.get(f"/api/v1/projects/{pid}/providers/{job['provider_id']}/usage",
                       headers=owner.headers).json()
    assert usage == {"jobs": 1, **{k: job[k] for k in ("requests", "retried", "repairs",
                                                        "prompt_tokens", "completion_tokens")}}
    return units


GOOD = json.dumps([{"instruction": "Summarise", "input": "", "output": "An ultrasound study."}])


def test_tokens_of_successful_and_repaired_attempts_are_counted(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 2)
    with FakeOpenAIServer(responder=lambda req: GOOD) as server:
        server.script(Reply("Sure! Here it is: not JSON at all"))  # the first unit repairs once
        job = _run(client, owner, pid, server, "instruction.en", {"n": 1})
        units = _assert_accounted(client, owner, pid, job, server)
    assert [(u["requests"], u["repairs"], u["retries"]) for u in units] == [(2, 1, 0), (1, 0, 0)]
    assert job["repairs"] == 1 and job["retried"] == 0


def test_tokens_of_retried_requests_and_retried_units_are_counted_once(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 2)
    with FakeOpenAIServer(responder=lambda req: GOOD) as server:
        # unit 1: a 429 and a 500 before the answer (two HTTP retries); unit 2: three answers
        # that never parse (its first attempt fails, one unit retry), then a good one
        server.script(rate_limited(0), Fail(500), Reply(GOOD), Reply("no"), Reply("no"),
                      Reply("no"))
        job = _run(client, owner, pid, server, "instruction.en", {"n": 1})
        units = _assert_accounted(client, owner, pid, job, server)
    assert job["status"] == "succeeded" and job["done_units"] == 2, job
    assert [(u["requests"], u["retries"], u["attempts"]) for u in units] == [(3, 2, 1),
                                                                            (4, 1, 2)]
    assert job["retried"] == 3 and job["requests"] == 7


def test_tokens_of_failed_and_truncated_units_are_counted(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 2)
    cut = Reply("Summarise the", finish_reason="length")
    with FakeOpenAIServer(responder=lambda req: "never JSON") as server:
        server.script(cut, cut)  # unit 1: cut off, and again with the larger budget
        job = _run(client, owner, pid, server, "instruction.en", {"n": 1})
        units = _assert_accounted(client, owner, pid, job, server)
    assert job["status"] == "failed" and job["failed_units"] == 2, job
    assert [(u["error_code"], u["requests"], u["attempts"]) for u in units] == [
        ("truncated", 2, 1), ("parse_failed", 9, 3)]
    assert job["failure_reasons"] == {"parse_failed": 1, "truncated": 1}
    assert "all 2 of 2 unit(s) failed (1 parse_failed, 1 truncated)" in job["error"]
    assert units[1]["raw_output"] == "never JSON"


def test_tokens_of_a_cancelled_attempt_are_counted(client, db, project):
    from service.core.db import get_sessionmaker
    from service.generation import service as gs
    from service.models import GenerationJob
    from tests.generation.test_engine import _create_job_without_sending
    from workers.generation import runner

    owner, pid = project
    make_chunks(db, pid, 3)
    job_id: list[int] = []

    def responder(req):
        if len(server.requests) == 2:  # the user cancels while the second unit's call runs
            with get_sessionmaker()() as s:
                gs.set_job_state(s, s.get(GenerationJob, job_id[0]), "cancel")
                s.commit()
        return "kw1;kw2"

    with FakeOpenAIServer(responder=responder) as server:
        prov = gs.create_provider(db, project_id=pid, data={
            "name": "p", "base_url": server.url, "model": "m", "max_concurrency": 1})
        db.commit()
        job_id.append(_create_job_without_sending(db, pid, prov.id, "keywords.en"))
        assert runner.run_job(job_id[0])["status"] == "lost"
        job = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job_id[0]}",
                         headers=owner.headers).json()
        assert job["status"] == "cancelled" and job["done_units"] == 1, job
        units = _assert_accounted(client, owner, pid, job, server)
    assert server.chat_requests == 2
    assert [(u["status"], u["requests"]) for u in units] == [("done", 1), ("pending", 1),
                                                            ("pending", 0)]
    assert db.scalar(select(func.count()).select_from(Sample)) == 1  # nothing after the cancel


# -- D: templates checked when saved; Preview renders the text being edited --------------------

@pytest.mark.parametrize("text, line, says", [
    ("{{ text | nosuchfilter }}", 1, "unknown filter 'nosuchfilter' on line 1"),
    ("Passage:\n{{ text }}\n{% if n %}{{ text | nope }}{% endif %}", 3,
     "unknown filter 'nope' on line 3"),
    ("{{ text is nosuchtest }}", 1, "unknown test 'nosuchtest'"),
    ("Passage:\n{{ text }}\n\nWrite {{ numbr }} questions.", 4, "unknown variable 'numbr' on line 4"),
    ("Passage:\n{% for x in %}", 2, "template syntax error on line 2"),
])
def test_a_template_is_checked_when_saved(client, project, text, line, says):
    owner, pid = project
    resp = client.post(f"/api/v1/projects/{pid}/templates", headers=owner.headers,
                       json={"name": "t", "kind": "question", "text": text})
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/json", resp.text
    [detail] = resp.json()["error"]["details"]
    assert detail["field"] == "body.text" and detail["line"] == line
    assert says in detail["message"], detail


def test_variables_are_checked_against_what_the_kind_provides(client, db, project):
    owner, pid = project
    url = f"/api/v1/projects/{pid}/templates"
    judge = client.post(url, headers=owner.headers, json={
        "name": "j", "kind": "judge", "text": "Grade:\n{{ text }}"})
    assert judge.status_code == 422 and "unknown variable 'text' on line 2" in judge.text
    assert client.post(url, headers=owner.headers, json={
        "name": "j", "kind": "judge", "text": "{{ question }} {{ prediction }} {{ reference }}",
        "parser": {"kind": "json"}}).status_code == 201
    declared = client.post(url, headers=owner.headers, json={
        "name": "d", "kind": "custom",
        "text": "{#-\nvariables: text, audience\n-#}\nFor {{ audience }}: {{ text }}"})
    assert declared.status_code == 201, declared.text
    make_chunks(db, pid, 1)
    preview = client.post(f"{url}/{declared.json()['id']}/preview", headers=owner.headers,
                          json={"params": {"variables": {"audience": "nurses"}}})
    assert preview.json()["rendered"].startswith("For nurses: 摘要0")


def test_preview_renders_the_text_being_edited(client, db, project):
    owner, pid = project
    make_chunks(db, pid, 1)
    url = f"/api/v1/projects/{pid}/templates"
    tid = client.post(url, headers=owner.headers, json={
        "name": "e", "kind": "custom", "text": "Saved: {{ text }}"}).json()["id"]
    edited = client.post(f"{url}/{tid}/preview", headers=owner.headers,
                         json={"text": "Edited, {{ n }} items: {{ text | upper }}"})
    assert edited.status_code == 200 and edited.json()["rendered"].startswith("Edited, 1 items: 摘要0")
    saved = client.post(f"{url}/{tid}/preview", headers=owner.headers, json={})
    assert saved.json()["rendered"].startswith("Saved: 摘要0")
    bad = client.post(f"{url}/{tid}/preview", headers=owner.headers,
                      json={"text": "fine\n{{ text | nosuchfilter }}"})
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0] == {
        "field": "body.text", "line": 2, "message": "unknown filter 'nosuchfilter' on line 2"}


def test_keep_truncated_keeps_a_cut_off_draft_tagged(client, db, project):
    """Drafts with a deliberately small budget (a base model's keywords): asked for, a cut-off
    answer is kept for review, tagged, and not retried."""
    owner, pid = project
    make_chunks(db, pid, 1)
    with FakeOpenAIServer(responder=lambda req: Reply("kw1;kw2;kw", finish_reason="length")
                          ) as server:
        job = _run(client, owner, pid, server, "keywords.en",
                   {"keep_truncated": True, "sampling": {"max_tokens": 8}})
        assert server.chat_requests == 1
    assert job["status"] == "succeeded", job
    [sample] = client.get(f"/api/v1/projects/{pid}/samples", headers=owner.headers).json()["items"]
    assert sample["tags"] == ["truncated"] and sample["messages"][1]["content"] == "kw1;kw2;kw"


def test_a_unit_whose_samples_exist_is_closed_as_done_with_its_cost(client, db, project):
    """A unit that finds its samples already written (an earlier run's) is done, never run
    again and never a second copy; its attempt's tokens still count."""
    from service.generation import service as gs
    from service.samples import service as samples_service
    from tests.generation.test_engine import _create_job_without_sending
    from workers.generation import runner

    owner, pid = project
    make_chunks(db, pid, 1)
    with FakeOpenAIServer(responder=lambda req: "kw1;kw2") as server:
        prov = gs.create_provider(db, project_id=pid, data={
            "name": "p", "base_url": server.url, "model": "m", "max_concurrency": 1})
        db.commit()
        job_id = _create_job_without_sending(db, pid, prov.id, "keywords.en")
        key = db.scalar(select(GenerationUnit.key).where(GenerationUnit.job_id == job_id))
        earlier = samples_service.create_sample(db, project_id=pid, messages=[
            {"role": "user", "content": "q"}, {"role": "assistant", "content": "kw0"}])
        earlier.unit_key = f"{key}#0"
        db.commit()
        assert runner.run_job(job_id)["status"] == "succeeded"
        job = client.get(f"/api/v1/projects/{pid}/generation-jobs/{job_id}",
                         headers=owner.headers).json()
        [unit] = _assert_accounted(client, owner, pid, job, server)
    assert unit["status"] == "done" and unit["sample_id"] == earlier.id and unit["requests"] == 1
    assert db.scalar(select(func.count()).select_from(Sample)) == 1
