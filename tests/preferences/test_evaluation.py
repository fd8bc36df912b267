"""Evaluations on a preference version's held-out split through REST: the judged win rate of a
candidate over a baseline (both orders, a confidence interval), and validation that names the
field. The reward accuracy of a trained DPO model is in tests/training_jobs/test_preference.py."""
from __future__ import annotations

import re

import pytest

from service.models import PreferenceEvalRun
from service.preferences import judge as judge_mod
from tests.support import worker as w
from tests.support.openai_server import FakeOpenAIServer


def _url(pid: int, path: str) -> str:
    return f"/api/v1/projects/{pid}/{path}"


def held_out_version(client, db, team, n: int = 12) -> int:
    """A ready version of ``n`` decided pairs, half of them in the test split."""
    from service.models import Project
    from service.preferences import review as preferences_review
    from service.preferences import service as preferences_service

    project = db.get(Project, team.project_id)
    for i in range(n):
        item = preferences_service.create_item(
            db, project_id=team.project_id, prompt=[{"role": "user", "content": f"Question {i}?"}],
            candidates=[{"content": f"A careful answer {i}."}, {"content": "no"}])
        good, bad = preferences_service.candidates_of(db, item.id)
        preferences_review.decide(db, project=project, item=item, annotator_id=team.lead.user_id,
                                  outcome="preferred", chosen_id=good.id, rejected_id=bad.id)
    db.commit()
    v = client.post(_url(team.project_id, "preference-versions"), headers=team.lead.headers,
                    json={"seed": 3, "split": {"train": 0.5, "validation": 0.0, "test": 0.5}}).json()
    v = client.get(_url(team.project_id, f"preference-versions/{v['id']}"),
                   headers=team.lead.headers).json()
    assert v["status"] == "ready" and v["counts"]["test"] > 0, v
    return v["id"]


def _answers_and_judge(req):
    """Model ``good`` answers well, ``weak`` badly; the judge (model ``judge``) prefers the
    answer that says 'careful', wherever it stands."""
    if req["model"] == "good":
        return "A careful, complete answer."
    if req["model"] == "weak":
        return "meh"
    text = req["messages"][-1]["content"]
    a = re.search(r"## Answer A\n(.*?)\n\n## Answer B", text, re.DOTALL).group(1)
    return "A is careful.\nVerdict: A" if "careful" in a else "B is careful.\nVerdict: B"


def _provider(client, team, server, model):
    resp = client.post(_url(team.project_id, "providers"), headers=team.lead.headers, json={
        "name": model, "base_url": server.url, "model": model, "max_concurrency": 4})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_win_rate_both_orders_and_position_bias(client, db, team):
    pid = team.project_id
    vid = held_out_version(client, db, team)
    with FakeOpenAIServer(responder=_answers_and_judge) as server:
        good, weak, judge = (_provider(client, team, server, m) for m in ("good", "weak", "judge"))
        body = {"preference_version_id": vid, "kind": "win_rate", "judge_provider_id": judge,
                "models": {"candidate": {"kind": "provider", "provider_id": good},
                           "baseline": {"kind": "provider", "provider_id": weak}}}
        resp = client.post(_url(pid, "preference-evals"), headers=team.lead.headers, json=body)
        assert resp.status_code == 201, resp.text
        assert resp.json()["queue"] == "generate"  # no local model: the generate queue
        run = client.get(_url(pid, f"preference-evals/{resp.json()['id']}"),
                         headers=team.viewer.headers).json()
        assert run["status"] == "succeeded", run
        agg = run["aggregate"]
        n = run["total"]
        assert agg["n"] == n == run["done"] and run["failed"] == 0
        assert agg["win_rate"] == 1.0 and agg["wins"] == n and agg["position_consistency"] == 1.0
        assert agg["win_rate_ci_low"] == agg["win_rate_ci_high"] == 1.0
        items = client.get(_url(pid, f"preference-evals/{run['id']}/items"),
                           headers=team.viewer.headers).json()["items"]
        assert len(items) == n and items[0]["outputs"]["candidate"].startswith("A careful")
        assert items[0]["outputs"]["verdicts"] == ["A", "B"]  # the candidate won in both orders

        # the judge always says "A": the two orders cancel, every item is a tie
        server.responder = lambda req: "Verdict: A" if req["model"] == "judge" else "same"
        body["models"] = {"candidate": body["models"]["baseline"],
                          "baseline": body["models"]["candidate"]}
        biased = client.post(_url(pid, "preference-evals"), headers=team.lead.headers,
                             json=body).json()
        biased = client.get(_url(pid, f"preference-evals/{biased['id']}"),
                            headers=team.viewer.headers).json()
        assert biased["status"] == "succeeded", biased
        assert biased["aggregate"]["win_rate"] == 0.5 and biased["aggregate"]["ties"] == n
        assert biased["aggregate"]["position_consistency"] == 0.0

        # a judge that names no verdict fails its items, with the reason
        server.responder = lambda req: "I cannot decide." if req["model"] == "judge" else "x"
        failed = client.post(_url(pid, "preference-evals"), headers=team.lead.headers,
                             json=body).json()
        failed = db.get(PreferenceEvalRun, failed["id"])
        assert failed.status == "failed" and "no verdict" in failed.error
    listed = client.get(_url(pid, "preference-evals"), headers=team.viewer.headers).json()["items"]
    assert [r["id"] for r in listed][:3] == [failed.id, biased["id"], run["id"]]
    page = client.get(f"/projects/{pid}/evaluation/preferences/{run['id']}",
                      headers=team.viewer.headers)
    assert page.status_code == 200 and "win rate: 1.000" in page.text
    assert "A careful, complete answer." in page.text
    listing = client.get(f"/projects/{pid}/evaluation/preferences", headers=team.viewer.headers)
    assert listing.status_code == 200 and f"/evaluation/preferences/{run['id']}" in listing.text
    assert "win rate 0.500" in listing.text  # the biased judge's run
    evaluation = client.get(f"/projects/{pid}/evaluation", headers=team.viewer.headers).text
    assert f'href="/projects/{pid}/evaluation/preferences"' in evaluation  # the project's tab


def test_validation_names_the_field(client, db, team):
    pid = team.project_id
    vid = held_out_version(client, db, team, n=4)
    url = _url(pid, "preference-evals")

    def field(body):
        resp = client.post(url, headers=team.lead.headers, json=body)
        assert resp.status_code == 422, resp.text
        return resp.json()["error"]["details"][0]["field"]

    base = {"kind": "base", "base_model": "smollm2-135m-instruct"}
    assert field({"preference_version_id": 999999, "kind": "reward_accuracy",
                  "models": {"policy": base}}) == "body.preference_version_id"
    assert field({"preference_version_id": vid, "kind": "reward_accuracy",
                  "models": {}}) == "body.models.policy"
    assert field({"preference_version_id": vid, "kind": "reward_accuracy",
                  "models": {"policy": base}}) == "body.models.reference"  # no job: name one
    assert field({"preference_version_id": vid, "kind": "reward_accuracy",
                  "models": {"policy": {"kind": "training_job", "training_job_id": 999}}}
                 ) == "body.models.policy.training_job_id"
    assert field({"preference_version_id": vid, "kind": "win_rate",
                  "models": {"candidate": base, "baseline": base}}) == "body.judge_provider_id"
    assert field({"preference_version_id": vid, "kind": "win_rate", "split": "validation",
                  "judge_provider_id": 1, "models": {"candidate": base, "baseline": base}}
                 ) == "body.split"
    with FakeOpenAIServer() as server:
        prov = _provider(client, team, server, "m")
        assert field({"preference_version_id": vid, "kind": "reward_accuracy",
                      "models": {"policy": {"kind": "provider", "provider_id": prov},
                                 "reference": base}}) == "body.models.policy.kind"
    assert client.post(url, headers=team.ann1.headers, json={
        "preference_version_id": vid, "kind": "reward_accuracy",
        "models": {"policy": base, "reference": base}}).status_code == 403


@pytest.mark.parametrize("replies,score,consistent", [
    (["Verdict: A", "Verdict: B"], 1.0, True), (["Verdict: B", "verdict: a"], 0.0, True),
    (["**Verdict:** tie", "Verdict: B"], 0.75, False), (["A", "A"], 0.5, False)])
def test_judge_combines_both_orders(replies, score, consistent):
    from service.generation.llm_types import LLMResult

    it = iter(replies)
    seen = []

    def chat(messages):
        seen.append(messages[-1]["content"])
        return LLMResult(content=next(it), reasoning=None, prompt_tokens=3, completion_tokens=1,
                         latency_s=0.0, attempts=1, raw={})

    j = judge_mod.judge_pair(chat, [{"role": "user", "content": "Q?"}], "first", "second")
    assert (j.score, j.consistent) == (score, consistent)
    assert seen[0].index("first") < seen[0].index("second")
    assert seen[1].index("second") < seen[1].index("first")  # the swapped order
    assert j.prompt_tokens == 6
    with pytest.raises(judge_mod.NoVerdict):
        judge_mod.parse_verdict("no idea")


@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
def test_cancel_queued_and_finished(client, db, team, monkeypatch):
    pid = team.project_id
    vid = held_out_version(client, db, team, n=4)
    base = {"kind": "base", "base_model": "smollm2-135m-instruct"}
    body = {"preference_version_id": vid, "kind": "reward_accuracy",
            "models": {"policy": base, "reference": base}}
    w.route_to_worker(monkeypatch, "preferences.evaluate")  # to the broker; no worker takes it
    try:
        queued = client.post(_url(pid, "preference-evals"), headers=team.lead.headers, json=body)
        assert queued.status_code == 201 and queued.json()["status"] == "queued", queued.text
        run_id = queued.json()["id"]
        assert client.post(_url(pid, f"preference-evals/{run_id}/cancel"),
                           headers=team.ann1.headers).status_code == 403
        cancelled = client.post(_url(pid, f"preference-evals/{run_id}/cancel"),
                                headers=team.lead.headers)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        again = client.post(_url(pid, f"preference-evals/{run_id}/cancel"),
                            headers=team.lead.headers)
        assert again.status_code == 409 and again.json()["error"]["code"] == "run_finished"
        assert client.get(_url(pid, "preference-evals/99999999"),
                          headers=team.viewer.headers).status_code == 404
    finally:
        w.purge()


@pytest.mark.worker
@pytest.mark.skipif(not w.redis_available(), reason="no Redis")
def test_win_rate_through_a_real_generate_worker(client, db, team, monkeypatch, tmp_path):
    """No local model: the run goes to the generate queue and a real worker runs it."""
    import time

    pid = team.project_id
    vid = held_out_version(client, db, team, n=8)
    w.purge()
    w.route_to_worker(monkeypatch, "preferences.evaluate")
    with FakeOpenAIServer(responder=_answers_and_judge) as server:
        good, weak, judge = (_provider(client, team, server, m) for m in ("good", "weak", "judge"))
        with w.running_worker("generate", name="gen-pref-eval", log_path=tmp_path / "w.log"):
            resp = client.post(_url(pid, "preference-evals"), headers=team.lead.headers, json={
                "preference_version_id": vid, "kind": "win_rate", "judge_provider_id": judge,
                "models": {"candidate": {"kind": "provider", "provider_id": weak},
                           "baseline": {"kind": "provider", "provider_id": good}}})
            assert resp.status_code == 201 and resp.json()["status"] == "queued", resp.text
            deadline = time.time() + 120
            while time.time() < deadline:
                db.expire_all()
                run = db.get(PreferenceEvalRun, resp.json()["id"])
                if run.status in ("succeeded", "failed"):
                    break
                time.sleep(0.3)
    assert run.status == "succeeded", (run.error, (tmp_path / "w.log").read_text()[-3000:])
    assert run.aggregate["win_rate"] == 0.0 and run.aggregate["losses"] == run.total
    assert run.worker and run.attempts == 1
