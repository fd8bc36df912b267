"""A model's answer that holds what PostgreSQL cannot store in text (a NUL) or what is not UTF-8
(a lone surrogate, sent as a JSON ``\\ud800`` escape) is cleaned where the answer comes in
(``LLMResult``), with a warning, as a document's text is: one odd answer never fails the write
of the whole batch (before, the job failed with ``UnicodeEncodeError``). Real HTTP server, the
real runners, PostgreSQL or SQLite."""
from __future__ import annotations

import logging

from sqlalchemy import select

from service.generation.llm_types import LLMResult
from service.models import GenerationUnit, Sample
from tests.generation.test_engine import _template_id, make_chunks, project  # noqa: F401
from tests.support.openai_server import FakeOpenAIServer, Reply


def _job(client, owner, pid: int, responder, template: str, **params) -> dict:
    """A generation job of ``template`` against a server answering with ``responder``, run
    (eagerly) to its end: the job as the API shows it."""
    with FakeOpenAIServer(responder=responder) as server:
        prov = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
            "name": "p", "base_url": server.url, "model": "m", "keep_reasoning": True}).json()
        job = client.post(f"/api/v1/projects/{pid}/generation-jobs", headers=owner.headers,
                          json={"template_id": _template_id(client, owner, pid, template),
                                "provider_id": prov["id"], "params": params}).json()
    return client.get(f"/api/v1/projects/{pid}/generation-jobs/{job['id']}",
                      headers=owner.headers).json()


def test_the_result_of_a_call_is_storable_text():
    res = LLMResult(content="超声\x00甲状腺\ud800", reasoning="\x00\udfff", prompt_tokens=1,
                    completion_tokens=1, latency_s=0.0, attempts=1, raw={})
    assert (res.content, res.reasoning, res.removed) == ("超声甲状腺", None, 4)
    ok = LLMResult(content="a 🙂 b", reasoning="r", prompt_tokens=1, completion_tokens=1,
                   latency_s=0.0, attempts=1, raw={})
    assert (ok.content, ok.reasoning, ok.removed) == ("a 🙂 b", "r", 0)  # a real pair stays


def test_nul_and_lone_surrogates_in_answers_fail_no_job(client, db, project, caplog):  # noqa: F811
    owner, pid = project
    chunks = make_chunks(db, pid, 4)
    bad = {"摘要1": "超声\x00;甲状腺", "摘要2": "超声\ud800;甲状腺"}

    def responder(req):
        prompt = req["messages"][-1]["content"]
        return next((v for k, v in bad.items() if k in prompt), "超声;甲状腺")

    caplog.set_level(logging.WARNING, logger="service.generation.llm_types")
    job = _job(client, owner, pid, responder, "keywords.zh")
    assert job["status"] == "succeeded" and job["done_units"] == 4, job
    units = {u.chunk_id: u for u in db.scalars(select(GenerationUnit))}
    assert units[chunks[1]].raw_output == units[chunks[2]].raw_output == "超声;甲状腺"
    samples = {s.chunk_id: s for s in db.scalars(select(Sample))}
    assert samples[chunks[1]].messages[-1] == samples[chunks[0]].messages[-1]  # the answer
    assert sum("NUL or lone surrogate" in r.getMessage() for r in caplog.records) == 2


def test_reasoning_with_a_nul_is_kept_without_it(client, db, project):  # noqa: F811
    from tests.generation.test_engine import qa_responder

    owner, pid = project
    make_chunks(db, pid, 1)
    responder = qa_responder("1. What is studied?", Reply("<think>look\x00 here</think>The thyroid."))
    assert _job(client, owner, pid, responder, "question.en", n=1)["done_units"] == 1
    sample = db.scalars(select(Sample)).one()
    assert sample.messages[-1]["content"] == "The thyroid."
    assert sample.reasoning == "look here"


def test_an_evaluation_run_stores_such_a_prediction(client, db, factories):
    from service.evaluation import service as ev
    from service.models import EvalPrediction, EvalRun
    from tests.evaluation.test_service import make_provider, ready_version, reference_responder
    from workers.evaluation import runner

    _owner, pid, vid = ready_version(client, db, factories, n=4)
    with FakeOpenAIServer(responder=lambda req: reference_responder(req) + "\x00\ud800") as server:
        prov = make_provider(db, pid, server.url)
        run = ev.create_run(db, project_id=pid, dataset_version_id=vid, model_kind="endpoint",
                            provider_id=prov.id, enqueue=False, metrics=["exact_match"])
        db.commit()
        assert runner.run_endpoint(run.id)["status"] == "succeeded"
    db.expire_all()
    run = db.get(EvalRun, run.id)
    assert (run.status, run.failed) == ("succeeded", 0)
    preds = db.scalars(select(EvalPrediction).where(EvalPrediction.run_id == run.id)).all()
    assert preds and all(p.scores["exact_match"] == 1.0 for p in preds)


def test_a_local_model_output_is_storable_text():
    from workers.evaluation.local import Output  # no torch at import

    out = Output(text="k1\x00, k2\ud800", prompt_tokens=3, completion_tokens=2, latency_ms=1)
    assert out.text == "k1, k2"
