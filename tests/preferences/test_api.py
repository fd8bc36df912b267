"""Comparison items, pairwise decisions, agreement and adjudication, versions and exports
through the REST API."""
from __future__ import annotations

import hashlib
import json

import orjson

from service.preferences import export as preferences_export
from tests.support.openai_server import FakeOpenAIServer


def _url(pid: int, path: str) -> str:
    return f"/api/v1/projects/{pid}/{path}"


def _candidates(client, team, item_id):
    item = client.get(_url(team.project_id, f"preference-items/{item_id}"),
                      headers=team.lead.headers).json()
    good = next(c["id"] for c in item["candidates"] if "good" in c["content"])
    bad = next(c["id"] for c in item["candidates"] if c["id"] != good)
    return good, bad


def test_create_import_and_validation(client, team):
    pid = team.project_id
    created = client.post(_url(pid, "preference-items"), headers=team.lead.headers, json={
        "prompt": [{"role": "user", "content": "Hi?"}],
        "candidates": [{"content": "Hello.", "provenance": {"model": "a", "temperature": 0.2}},
                       {"content": "Hey.", "provenance": {"model": "a", "temperature": 1.0}}]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "pending" and [c["provenance"]["temperature"] for c in body["candidates"]] == [0.2, 1.0]
    bad = client.post(_url(pid, "preference-items"), headers=team.lead.headers, json={
        "prompt": [{"role": "assistant", "content": "no user turn"}]})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "body.prompt"
    assert client.post(_url(pid, "preference-items"), headers=team.ann1.headers, json={
        "prompt": [{"role": "user", "content": "x"}]}).status_code == 403

    imported = client.post(_url(pid, "preference-items/import"), headers=team.lead.headers, json={
        "records": [{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
                    {"prompt": [{"role": "user", "content": "2+2?"}],
                     "chosen": [{"role": "assistant", "content": "4"}],
                     "rejected": [{"role": "assistant", "content": "5"}]},
                    {"prompt": "Pick one", "candidates": ["A", "B", "C"]},
                    {"prompt": "broken", "chosen": ""}]})
    assert imported.status_code == 200, imported.text
    result = imported.json()
    assert (result["imported"], result["decided"]) == (3, 2)
    assert result["errors"][0]["record"] == 3 and result["errors"][0]["field"].startswith("body.records.3")
    listed = client.get(_url(pid, "preference-items?status=decided"), headers=team.viewer.headers).json()
    assert len(listed["items"]) == 2 and all(i["outcome"] == "preferred" for i in listed["items"])


def test_two_annotators_disagree_lead_adjudicates_kappa(client, team, make_pairs):
    pid = team.project_id
    ids = make_pairs(pid, 4)
    client.put(_url(pid, "review/settings"), headers=team.lead.headers, json={"review_overlap": 2})
    for n, item_id in enumerate(ids):
        good, bad = _candidates(client, team, item_id)
        for actor in (team.ann1, team.ann2):
            nxt = client.get(_url(pid, "preference-review/next"), headers=actor.headers).json()
            assert nxt["id"] == item_id
            disagree = actor is team.ann2 and n == 3
            body = ({"outcome": "preferred", "chosen_id": bad, "rejected_id": good, "reason": "shorter"}
                    if disagree else {"outcome": "preferred", "chosen_id": good, "rejected_id": bad})
            if actor is team.ann1 and n == 0:
                body["edited_text"] = "Item 0 is a good answer, edited."
            resp = client.post(_url(pid, f"preference-items/{item_id}/decision"),
                               headers=actor.headers, json=body)
            assert resp.status_code == 200, resp.text
        status = resp.json()["status"]
        assert status == ("disputed" if n == 3 else "decided")
    assert client.get(_url(pid, "preference-review/next"), headers=team.ann1.headers).json() is None
    first = client.get(_url(pid, f"preference-items/{ids[0]}"), headers=team.viewer.headers).json()
    assert first["chosen_text"] == "Item 0 is a good answer, edited."

    agreement = client.get(_url(pid, "preference-review/agreement"), headers=team.viewer.headers).json()
    assert agreement["items_with_overlap"] == 4 and agreement["disputed"] == 1
    assert agreement["pairs"][0]["items"] == 4 and agreement["pairs"][0]["observed"] == 0.75
    assert agreement["kappa"] is not None and agreement["kappa"] < 1

    good, bad = _candidates(client, team, ids[3])
    assert client.post(_url(pid, f"preference-items/{ids[3]}/adjudicate"), headers=team.ann1.headers,
                       json={"outcome": "tie"}).status_code == 403
    adj = client.post(_url(pid, f"preference-items/{ids[3]}/adjudicate"), headers=team.lead.headers,
                      json={"outcome": "preferred", "chosen_id": good, "rejected_id": bad})
    assert adj.status_code == 200 and adj.json()["status"] == "adjudicated"
    decisions = client.get(_url(pid, f"preference-items/{ids[3]}/decisions"),
                           headers=team.lead.headers).json()["items"]
    assert sorted(d["reason"] or "" for d in decisions) == ["", "shorter"]


def _decide_all(client, team, ids, outcomes):
    for item_id, outcome in zip(ids, outcomes):
        good, bad = _candidates(client, team, item_id)
        body = {"outcome": outcome}
        if outcome == "preferred":
            body.update(chosen_id=good, rejected_id=bad)
        resp = client.post(_url(team.project_id, f"preference-items/{item_id}/decision"),
                           headers=team.ann1.headers, json=body)
        assert resp.status_code == 200, resp.text


def build(client, team, **body):
    resp = client.post(_url(team.project_id, "preference-versions"), headers=team.lead.headers,
                       json={"name": "Support prefs", "seed": 3,
                             "split": {"train": 0.8, "validation": 0.2, "test": 0.0}, **body})
    assert resp.status_code == 201, resp.text
    version = client.get(_url(team.project_id, f"preference-versions/{resp.json()['id']}"),
                         headers=team.viewer.headers).json()
    assert version["status"] == "ready", version
    return version


def test_version_and_exports_are_reproducible(client, team, make_pairs):
    pid = team.project_id
    ids = make_pairs(pid, 12, system=True)
    _decide_all(client, team, ids, ["preferred"] * 9 + ["tie", "both_bad", "preferred"])
    version = build(client, team)
    assert version["counts"]["total"] == 11 and version["counts"]["pairs"] == 10
    assert version["counts"]["both_bad"] == 1 and version["stats"]["ties_excluded"] == 1
    assert version["counts"]["train"] + version["counts"]["validation"] == 11
    vid = version["id"]
    shas = {}
    for fmt in ("sharegpt", "alpaca", "trl", "kto"):
        first = client.post(_url(pid, f"preference-versions/{vid}/exports/{fmt}"), headers=team.lead.headers)
        assert first.status_code == 200, first.text
        again = client.post(_url(pid, f"preference-versions/{vid}/exports/{fmt}"), headers=team.lead.headers).json()
        assert again == first.json()
        shas[fmt] = first.json()["manifest_sha256"]
        train = client.get(_url(pid, f"preference-versions/{vid}/exports/{fmt}/train.jsonl"),
                           headers=team.viewer.headers)
        assert train.status_code == 200
        assert hashlib.sha256(train.content).hexdigest() == first.json()["files"]["train.jsonl"]["sha256"]
        rows = [json.loads(line) for line in train.text.splitlines()]
        if fmt == "trl":
            assert set(rows[0]) == {"prompt", "chosen", "rejected"}
            assert rows[0]["prompt"][0] == {"role": "system", "content": "Answer briefly."}
            assert rows[0]["chosen"][0]["role"] == "assistant" and "good" in rows[0]["chosen"][0]["content"]
        if fmt == "sharegpt":
            assert rows[0]["conversations"][0]["from"] == "human" and rows[0]["system"] == "Answer briefly."
            assert rows[0]["chosen"]["from"] == "gpt"
            info = client.get(_url(pid, f"preference-versions/{vid}/exports/{fmt}/dataset_info.json"),
                              headers=team.viewer.headers).json()
            entry = info["support_prefs_p1_train"]
            assert entry["ranking"] is True and entry["columns"]["chosen"] == "chosen"
        if fmt == "kto":
            assert {r["label"] for r in rows} == {True, False}
            assert sum(1 for r in rows if r["label"]) < sum(1 for r in rows if not r["label"])
    # the bytes depend on nothing but the frozen items: rewritten from scratch, the same
    folder = preferences_export.export_dir(vid, "trl")
    before = (folder / "manifest.json").read_bytes()
    import shutil

    shutil.rmtree(folder)
    client.post(_url(pid, f"preference-versions/{vid}/exports/trl"), headers=team.lead.headers)
    assert (folder / "manifest.json").read_bytes() == before
    assert orjson.loads(before)["seed"] == 3
    assert client.get(_url(pid, f"preference-versions/{vid}/exports/trl/..%2Fsecret"),
                      headers=team.viewer.headers).status_code == 404
    assert client.post(_url(pid, f"preference-versions/{vid}/exports/csv"),
                       headers=team.lead.headers).status_code == 404


def test_generation_drafts_two_candidates_per_prompt(client, team):
    pid = team.project_id
    for i in range(3):
        client.post(_url(pid, "preference-items"), headers=team.lead.headers, json={
            "prompt": [{"role": "user", "content": f"Question {i}?"}]})

    def answer(req):
        return f"answer at temperature {req.get('temperature')} seed {req.get('seed')}"

    with FakeOpenAIServer(responder=answer) as server:
        prov = client.post(_url(pid, "providers"), headers=team.lead.headers, json={
            "name": "p", "base_url": server.url, "model": "fake-model"}).json()
        job = client.post(_url(pid, "preference-generation-jobs"), headers=team.lead.headers, json={
            "sources": [{"provider_id": prov["id"], "params": {"temperature": 0.2, "seed": 1}},
                        {"provider_id": prov["id"], "params": {"temperature": 1.0, "seed": 2}}]})
        assert job.status_code == 201, job.text
        job = client.get(_url(pid, f"preference-generation-jobs/{job.json()['id']}"),
                         headers=team.viewer.headers).json()
        assert job["status"] == "succeeded" and job["done_items"] == 3 and job["failed_items"] == 0, job
        again = client.post(_url(pid, "preference-generation-jobs"), headers=team.lead.headers, json={
            "sources": [{"provider_id": prov["id"]}, {"provider_id": prov["id"]}]})
        assert again.status_code == 422  # nothing is missing a candidate any more
    items = client.get(_url(pid, "preference-items"), headers=team.viewer.headers).json()["items"]
    for item in items:
        cands = item["candidates"]
        assert [c["position"] for c in cands] == [0, 1]
        assert cands[0]["content"] == "answer at temperature 0.2 seed 1"
        assert cands[1]["provenance"]["params"] == {"temperature": 1.0, "seed": 2}
        assert cands[1]["provenance"]["model"] == "fake-model" and cands[1]["provenance"]["job_id"] == job["id"]
