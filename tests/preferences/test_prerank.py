"""An LLM judge pre-ranks the comparison items' pairs (both orders) through the fake OpenAI
server: the judge's pick lands on the item, the lead sees it beside the annotators' decisions
and how often it agreed with them; a rerun asks nothing again."""
from __future__ import annotations

import re

from service.models import PreferenceGenerationJob
from tests.support.openai_server import FakeOpenAIServer


def _url(pid: int, path: str) -> str:
    return f"/api/v1/projects/{pid}/{path}"


def _prefers_good(req):
    text = req["messages"][-1]["content"]
    a = re.search(r"## Answer A\n(.*?)\n\n## Answer B", text, re.DOTALL).group(1)
    return ("A answers it.\nVerdict: A" if "good answer" in a
            else "B answers it.\nVerdict: B")


def test_judge_preranks_pairs_and_agreement_is_reported(client, db, team, make_pairs):
    pid = team.project_id
    ids = make_pairs(pid, 5)
    with FakeOpenAIServer(responder=_prefers_good) as server:
        judge = client.post(_url(pid, "providers"), headers=team.lead.headers, json={
            "name": "judge", "base_url": server.url, "model": "judge-model"}).json()["id"]
        assert client.post(_url(pid, "preference-items/prerank"), headers=team.ann1.headers,
                           json={"judge_provider_id": judge}).status_code == 403
        resp = client.post(_url(pid, "preference-items/prerank"), headers=team.lead.headers,
                           json={"judge_provider_id": judge})
        assert resp.status_code == 201, resp.text
        job = client.get(_url(pid, f"preference-generation-jobs/{resp.json()['id']}"),
                         headers=team.viewer.headers).json()
        assert job["status"] == "succeeded" and job["done_items"] == 5, job
        assert job["sources"][0]["role"] == "judge"
        assert server.chat_requests == 10  # each pair in both orders
        again = client.post(_url(pid, "preference-items/prerank"), headers=team.lead.headers,
                            json={"judge_provider_id": judge, "item_ids": ids[:2]}).json()
        assert db.get(PreferenceGenerationJob, again["id"]).status == "succeeded"
        assert server.chat_requests == 10  # ranked by this judge already: not asked again
    for item_id in ids:
        item = client.get(_url(pid, f"preference-items/{item_id}"), headers=team.lead.headers).json()
        good = next(c["id"] for c in item["candidates"] if "good" in c["content"])
        judged = item["judge"]
        assert judged["chosen_id"] == good and judged["consistent"], judged
        assert judged["model"] == "judge-model" and sorted(judged["verdicts"]) == ["A", "B"]

    # people decide: two pairs as the judge did, one the other way round
    client.put(_url(pid, "review/settings"), headers=team.lead.headers, json={"review_overlap": 1})
    for n, item_id in enumerate(ids[:3]):
        item = client.get(_url(pid, f"preference-items/{item_id}"), headers=team.lead.headers).json()
        good = next(c["id"] for c in item["candidates"] if "good" in c["content"])
        bad = next(c["id"] for c in item["candidates"] if c["id"] != good)
        chosen, rejected = (good, bad) if n < 2 else (bad, good)
        assert client.post(_url(pid, f"preference-items/{item_id}/decision"),
                           headers=team.ann1.headers,
                           json={"outcome": "preferred", "chosen_id": chosen,
                                 "rejected_id": rejected}).status_code == 200
    agreement = client.get(_url(pid, "preference-review/agreement"), headers=team.viewer.headers).json()
    assert agreement["judge_items"] == 3 and agreement["judge_agreement"] == round(2 / 3, 4)
    page = client.get(f"/projects/{pid}/preferences/adjudicate", headers=team.lead.headers)
    assert "agrees with people on" in page.text and "67%" in page.text
    one = client.get(f"/projects/{pid}/preferences/adjudicate?item={ids[0]}", headers=team.lead.headers)
    assert 'data-testid="judge-row"' in one.text and "judge-model" in one.text


def test_prerank_validation_names_the_field(client, team, make_pairs):
    pid = team.project_id
    url = _url(pid, "preference-items/prerank")
    missing = client.post(url, headers=team.lead.headers, json={"judge_provider_id": 99999})
    assert missing.status_code == 422
    assert missing.json()["error"]["details"][0]["field"] == "body.judge_provider_id"
    with FakeOpenAIServer() as server:
        judge = client.post(_url(pid, "providers"), headers=team.lead.headers, json={
            "name": "j", "base_url": server.url, "model": "j"}).json()["id"]
        nothing = client.post(url, headers=team.lead.headers, json={"judge_provider_id": judge})
        assert nothing.status_code == 422  # no item has two candidates yet
        assert nothing.json()["error"]["details"][0]["field"] == "body.item_ids"
