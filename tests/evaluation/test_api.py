"""Evaluation through the REST API and the pages: endpoint runs, predictions, comparison."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from service.evaluation.pages import diff_segments, fmt, fmt_delta
from service.models import DatasetVersionItem
from tests.evaluation.test_service import TOPICS, answer_for, ready_version
from tests.support.openai_server import FakeOpenAIServer


def _index(request) -> int:
    user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    return int(user.rsplit(" ", 1)[-1])


@pytest.mark.nodb
def test_diff_segments_marks_words_and_cjk_chars():
    left, right = diff_segments("the quick fox", "the slow fox")
    assert left == [("eq", "the "), ("del", "quick "), ("eq", "fox")]
    assert right == [("eq", "the "), ("ins", "slow "), ("eq", "fox")]
    left, right = diff_segments("甲状腺癌", "甲状腺结节")
    assert ("del", "癌") in left and ("ins", "结节") in right
    assert "".join(t for _, t in left) == "甲状腺癌" and "".join(t for _, t in right) == "甲状腺结节"


@pytest.fixture
def two_runs(client, db, factories):
    """A weak baseline and a strong candidate scored on the same 8 test items."""
    owner, pid, vid = ready_version(client, db, factories, n=16)
    items = list(db.scalars(select(DatasetVersionItem).where(
        DatasetVersionItem.version_id == vid, DatasetVersionItem.split == "test")
        .order_by(DatasetVersionItem.id)))
    indexes = [int(it.messages[1]["content"].rsplit(" ", 1)[-1]) for it in items]
    regress, hostile = indexes[0], indexes[1]

    def weak(request):
        i = _index(request)
        if i == hostile:
            return "<script>alert(1)</script>"
        return answer_for(i) if i == regress else TOPICS[i % len(TOPICS)]

    def strong(request):
        i = _index(request)
        return "no idea" if i == regress else answer_for(i)

    with FakeOpenAIServer(responder=weak) as weak_server, \
            FakeOpenAIServer(responder=strong) as strong_server:
        run_ids = []
        for name, server in (("weak", weak_server), ("strong", strong_server)):
            prov = client.post(f"/api/v1/projects/{pid}/providers", headers=owner.headers, json={
                "name": name, "base_url": server.url, "model": f"{name}-model",
                "max_concurrency": 2}).json()
            resp = client.post(f"/api/v1/projects/{pid}/eval-runs", headers=owner.headers, json={
                "name": name, "dataset_version_id": vid, "model_kind": "endpoint",
                "provider_id": prov["id"], "generation": {"max_tokens": 64}})
            assert resp.status_code == 201, resp.text
            assert resp.json()["status"] == "queued"
            run_ids.append(resp.json()["id"])
    return owner, pid, vid, run_ids, items, regress


def test_runs_predictions_and_download(client, two_runs):
    owner, pid, _vid, (weak_id, strong_id), items, _regress = two_runs
    base = f"/api/v1/projects/{pid}/eval-runs"
    run = client.get(f"{base}/{strong_id}", headers=owner.headers).json()
    assert (run["status"], run["total"], run["done"], run["failed"]) == ("succeeded", 8, 8, 0)
    assert run["metrics"] == ["exact_match", "bleu-4", "rouge", "char_f1"]
    assert run["aggregate"]["exact_match"] == pytest.approx(7 / 8)
    assert set(run["aggregate"]) == {"exact_match", "bleu-4", "rouge-1", "rouge-2", "rouge-l", "char_f1"}
    listed = client.get(base, headers=owner.headers).json()
    assert [r["id"] for r in listed["items"]] == [strong_id, weak_id] and listed["compare_url"] is None

    page1 = client.get(f"{base}/{strong_id}/predictions?limit=5", headers=owner.headers).json()
    page2 = client.get(f"{base}/{strong_id}/predictions?limit=5&cursor={page1['next_cursor']}",
                       headers=owner.headers).json()
    rows = page1["items"] + page2["items"]
    assert len(page1["items"]) == 5 and page2["next_cursor"] is None
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and len(rows) == 8
    assert sorted(r["item_id"] for r in rows) == [it.id for it in items]
    assert client.get(f"{base}/{strong_id}/predictions?failed=true", headers=owner.headers).json()["items"] == []

    resp = client.get(f"{base}/{strong_id}/predictions.jsonl", headers=owner.headers)
    assert resp.status_code == 200 and "attachment" in resp.headers["content-disposition"]
    lines = [json.loads(line) for line in resp.text.splitlines()]
    assert len(lines) == 8
    by_item = {line["item_id"]: line for line in lines}
    for it in items:
        line = by_item[it.id]
        assert line["prompt"] == it.messages[1]["content"]
        assert line["label"] == it.messages[2]["content"]
        assert set(line["scores"]) == set(run["aggregate"])
        assert line["messages"] == it.messages[:2]
    assert sum(line["predict"] == line["label"] for line in lines) == 7

    assert client.get(f"/projects/{pid}/evaluation", headers=owner.headers).status_code == 200
    page = client.get(f"/projects/{pid}/evaluation/runs/{strong_id}", headers=owner.headers)
    assert page.status_code == 200 and fmt(run["aggregate"]["char_f1"]) in page.text


def test_compare_json_and_page_agree(client, two_runs):
    owner, pid, _vid, (weak_id, strong_id), items, regress = two_runs
    url = f"/api/v1/projects/{pid}/eval-compare?runs={weak_id},{strong_id}"
    report = client.get(url, headers=owner.headers).json()
    assert report == client.get(url, headers=owner.headers).json()  # seeded: reproducible
    assert report["baseline"] == weak_id and report["seed"] == 0 and report["split"] == "test"
    assert report["metrics"][:2] == ["exact_match", "bleu-4"] and report["sort_metric"] == "rouge-l"
    em = report["comparisons"][0]["metrics"]["exact_match"]
    assert em["baseline_mean"] == pytest.approx(1 / 8) and em["mean"] == pytest.approx(7 / 8)
    assert em["ci_low"] <= em["delta"] <= em["ci_high"] and em["delta"] == pytest.approx(0.75)
    assert (em["win"], em["tie"], em["loss"]) == (7, 0, 1)
    first = report["per_sample"][0]
    regress_item = next(it.id for it in items if it.messages[1]["content"].endswith(f" {regress}"))
    assert first["item_id"] == regress_item and first["delta"] < 0
    assert first["predictions"] == {str(weak_id): answer_for(regress), str(strong_id): "no idea"}
    assert first["reference"] == answer_for(regress) and first["prompt"].endswith(f" {regress}")
    deltas = [row["delta"] for row in report["per_sample"]]
    assert deltas == sorted(deltas)

    page = client.get(f"/projects/{pid}/evaluation/compare?runs={weak_id},{strong_id}",
                      headers=owner.headers)
    assert page.status_code == 200
    html = page.text
    for metric in report["metrics"]:
        e = report["comparisons"][0]["metrics"][metric]
        for text in (fmt(e["baseline_mean"]), fmt(e["mean"]), fmt_delta(e["delta"]),
                     f"[{fmt_delta(e['ci_low'])}, {fmt_delta(e['ci_high'])}]",
                     f"{e['win']} / {e['tie']} / {e['loss']}"):
            assert text in html, (metric, text)
    assert html.count("<svg") == len(report["metrics"])
    assert html.index(f'data-sample="{first["sample"]}"') < html.index(
        f'data-sample="{report["per_sample"][1]["sample"]}"')
    assert fmt_delta(first["delta"]) in html
    assert "<ins>no idea</ins>" in html  # the candidate's words that differ, highlighted
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html


def test_compare_needs_runs_of_the_same_version_and_split(client, db, two_runs):
    owner, pid, vid, (weak_id, _strong_id), _items, _regress = two_runs
    prov = client.get(f"/api/v1/projects/{pid}/providers", headers=owner.headers).json()["items"][0]
    with FakeOpenAIServer() as server:
        client.patch(f"/api/v1/projects/{pid}/providers/{prov['id']}", headers=owner.headers,
                     json={"base_url": server.url})
        other = client.post(f"/api/v1/projects/{pid}/eval-runs", headers=owner.headers, json={
            "dataset_version_id": vid, "split": "train", "model_kind": "endpoint",
            "provider_id": prov["id"]}).json()
    other = client.get(f"/api/v1/projects/{pid}/eval-runs/{other['id']}", headers=owner.headers).json()
    assert other["status"] == "succeeded" and other["total"] == 8, other
    url = f"/api/v1/projects/{pid}/eval-compare"
    for runs in (f"{weak_id},{other['id']}", f"{weak_id}", "abc", f"{weak_id},{weak_id}",
                 f"{weak_id},999999"):
        resp = client.get(f"{url}?runs={runs}", headers=owner.headers)
        assert resp.status_code == 422, (runs, resp.text)
        assert resp.json()["error"]["details"][0]["field"] == "query.runs"
    page = client.get(f"/projects/{pid}/evaluation/compare?runs={weak_id},{other['id']}",
                      headers=owner.headers)
    assert page.status_code == 422 and "same dataset version and split" in page.text
    bad = client.post(f"/api/v1/projects/{pid}/eval-runs", headers=owner.headers, json={
        "dataset_version_id": vid, "model_kind": "base", "base_model": "no/such-model"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "body.base_model"
