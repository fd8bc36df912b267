"""REST and pages for datasets, versions, exports and diffs; one real-worker build."""
from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile

import pytest

from tests.datasets.test_service import conv, edit_sample, make_sample


@pytest.fixture
def world(db, factories):
    lead = factories.make_actor(db)
    viewer = factories.make_actor(db)
    outsider = factories.make_actor(db)
    from service.models import User

    project = factories.make_project(db, db.get(User, lead.user_id))
    factories.add_member(db, project, db.get(User, viewer.user_id), "viewer")
    samples = [make_sample(db, project, conv(i, system=i % 2 == 0)) for i in range(20)]
    db.commit()
    return {"lead": lead, "viewer": viewer, "outsider": outsider, "project": project,
            "samples": samples, "base": f"/api/v1/projects/{project.id}/datasets"}


def _dataset(client, w, name="qa") -> dict:
    r = client.post(w["base"], json={"name": name, "description": "d"}, headers=w["lead"].headers)
    assert r.status_code == 201, r.text
    return r.json()


def _version(client, w, ds, **body) -> dict:
    r = client.post(f"{w['base']}/{ds['id']}/versions", json=body, headers=w["lead"].headers)
    assert r.status_code == 201, r.text
    r = client.get(f"{w['base']}/{ds['id']}/versions/{r.json()['id']}", headers=w["lead"].headers)
    assert r.json()["status"] == "ready", r.json()
    return r.json()


def test_dataset_crud_and_access(client, world):
    w = world
    ds = _dataset(client, w)
    assert client.post(w["base"], json={"name": "qa"}, headers=w["lead"].headers).status_code == 409
    r = client.post(w["base"], json={"name": "x"}, headers=w["viewer"].headers)
    assert r.status_code == 403
    r = client.get(w["base"], headers=w["viewer"].headers)
    assert r.status_code == 200 and [d["id"] for d in r.json()["items"]] == [ds["id"]]
    assert client.get(f"{w['base']}/{ds['id']}", headers=w["viewer"].headers).json()["name"] == "qa"
    r = client.get(w["base"], headers=w["outsider"].headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "project_not_found"
    r = client.get(f"{w['base']}/{ds['id']}/versions", headers=w["outsider"].headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "project_not_found"
    r = client.get(f"{w['base']}/999999", headers=w["lead"].headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "dataset_not_found"


def test_bad_ratios_are_422_naming_the_field(client, world):
    ds = _dataset(client, world)
    url = f"{world['base']}/{ds['id']}/versions"
    r = client.post(url, json={"split": {"train": 0.8, "validation": 0.3, "test": 0.1}},
                    headers=world["lead"].headers)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "body.split"
    assert "sum to 1" in r.json()["error"]["details"][0]["message"]
    r = client.post(url, json={"split": {"train": 1.5, "validation": 0, "test": -0.5}},
                    headers=world["lead"].headers)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"].startswith("body.split.")
    r = client.post(url, json={"stratify_by": "tag"}, headers=world["lead"].headers)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "body.stratify_by"


def test_unknown_version_is_404(client, world):
    ds = _dataset(client, world)
    h = world["lead"].headers
    for path in ("versions/999999", "versions/999999/exports", "versions/999999/diff/999998",
                 "versions/999999/exports/openai/files/train.jsonl"):
        r = client.get(f"{world['base']}/{ds['id']}/{path}", headers=h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "version_not_found", path
    r = client.post(f"{world['base']}/{ds['id']}/versions/999999/exports", json={"format": "openai"},
                    headers=h)
    assert r.status_code == 404


def test_version_export_download_flow(client, world, db):
    w = world
    ds = _dataset(client, w)
    v = _version(client, w, ds, seed=3, stratify_by=None)
    assert v["number"] == 1 and v["counts"]["total"] == 20
    base = f"{w['base']}/{ds['id']}/versions/{v['id']}"
    r = client.post(f"{base}/exports", json={"format": "openai"}, headers=w["lead"].headers)
    assert r.status_code == 202, r.text
    r2 = client.post(f"{base}/exports", json={"format": "openai"}, headers=w["lead"].headers)
    assert r2.status_code == 200 and r2.json()["id"] == r.json()["id"]
    assert client.post(f"{base}/exports", json={"format": "openai"},
                       headers=w["viewer"].headers).status_code == 403
    assert client.post(f"{base}/exports", json={"format": "csv"},
                       headers=w["lead"].headers).status_code == 422
    exp = client.get(f"{base}/exports/openai", headers=w["viewer"].headers).json()
    assert exp["status"] == "ready" and exp["progress"] == 100
    members = exp["files"]["members"]
    for name, meta in members.items():
        r = client.get(f"{base}/exports/openai/files/{name}", headers=w["viewer"].headers)
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == meta["sha256"]
    for bad in ("..%2F..%2Fmanifest.json", "secret.txt", "%2Fetc%2Fpasswd"):
        r = client.get(f"{base}/exports/openai/files/{bad}", headers=w["viewer"].headers)
        assert r.status_code == 404, bad
    z1 = client.get(f"{base}/exports/openai/download", headers=w["viewer"].headers)
    assert z1.status_code == 200 and z1.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(z1.content)).namelist()
    assert "manifest.json" in names and "train.jsonl" in names
    assert client.get(f"{base}/exports/openai/download", headers=w["viewer"].headers).content == z1.content
    listed = client.get(f"{base}/exports", headers=w["viewer"].headers).json()["items"]
    assert [e["format"] for e in listed] == ["openai"]
    # editing a sample afterwards does not change what the version serves
    edit_sample(db, db.merge(w["samples"][0]), conv(0, text="changed"))
    db.commit()
    r = client.get(f"{base}/exports/openai/files/train.jsonl", headers=w["viewer"].headers)
    assert hashlib.sha256(r.content).hexdigest() == members["train.jsonl"]["sha256"]


def test_diff_endpoint_and_pages(client, world, db, factories):
    w = world
    ds = _dataset(client, w)
    v1 = _version(client, w, ds)
    edit_sample(db, db.merge(w["samples"][3]), conv(3, text="sharper question"))
    db.commit()
    v2 = _version(client, w, ds)
    url = f"{w['base']}/{ds['id']}/versions/{v1['id']}/diff/{v2['id']}"
    d = client.get(url, headers=w["viewer"].headers).json()
    assert d["summary"]["changed"] == 1 and d["summary"]["added"] == 0
    assert "+sharper question" in d["changed"][0]["diff"]
    # pages, through a browser session
    csrf = factories.browser_login(client, w["lead"].email)
    pid = w["project"].id
    page = client.get(f"/projects/{pid}")
    assert f"/projects/{pid}/datasets" in page.text
    page = client.get(f"/projects/{pid}/datasets")
    assert page.status_code == 200 and "qa" in page.text
    page = client.get(f"/projects/{pid}/datasets/{ds['id']}")
    assert page.status_code == 200 and f"v{v2['number']}" in page.text
    page = client.get(f"/projects/{pid}/datasets/{ds['id']}/versions/{v2['id']}")
    assert page.status_code == 200 and 'data-testid="chart-tokens"' in page.text
    assert "bar-fill" in page.text
    page = client.get(f"/projects/{pid}/datasets/{ds['id']}/versions/{v1['id']}/diff/{v2['id']}")
    assert page.status_code == 200 and "sharper question" in page.text
    r = client.post(f"/projects/{pid}/datasets/{ds['id']}/versions",
                    data={"csrf_token": csrf, "train": "0.5", "validation": "0.5", "test": "0.5"},
                    follow_redirects=False)
    assert r.status_code == 422 and "sum to 1" in r.text
    r = client.post(f"/projects/{pid}/datasets/{ds['id']}/versions",
                    data={"csrf_token": csrf, "status": ["accepted"], "seed": "4"},
                    follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    assert 'data-testid="version-status">ready' in page.text
    r = client.post(r.headers["location"] + "/exports", data={"csrf_token": csrf, "format": "alpaca"},
                    follow_redirects=False)
    assert r.status_code == 303
    assert "train.jsonl" in client.get(r.headers["location"]).text


def test_create_dataset_form(client, world, factories):
    csrf = factories.browser_login(client, world["lead"].email)
    pid = world["project"].id
    r = client.post(f"/projects/{pid}/datasets", data={"csrf_token": csrf, "name": "from form"},
                    follow_redirects=False)
    assert r.status_code == 303
    r = client.post(f"/projects/{pid}/datasets", data={"csrf_token": csrf, "name": "from form"})
    assert r.status_code == 409 and "already exists" in r.text


@pytest.mark.worker
def test_build_version_through_a_real_worker(db, world, monkeypatch):
    from tests.support import worker as w

    if not w.redis_available():
        pytest.skip("Redis not reachable")
    from service.core import jobs
    from service.datasets import schemas
    from service.datasets import service as datasets_service
    from service.models import DatasetVersion

    sent = []
    monkeypatch.setattr(jobs, "send_now", lambda name, **kw: sent.append((name, kw)))
    dataset = datasets_service.create_dataset(db, project_id=world["project"].id, name="queued")
    version = datasets_service.create_version(db, dataset=dataset, spec=schemas.VersionCreate(seed=2))
    db.commit()
    assert sent == [("datasets.build_version", {"version_id": version.id})]
    assert db.get(DatasetVersion, version.id).status == "queued"
    w.purge()
    with w.running_worker("ingest", name="datasets"):
        # the worker also re-sends every queued row when it starts (a broker may have lost the
        # message): whichever message comes first builds it, the other finds it claimed
        result = w.client().send_task("datasets.build_version", kwargs={"version_id": version.id},
                                      queue=jobs.queue_for("datasets.build_version"))
        assert result.get(timeout=60)["status"] in ("ready", "skipped")
    deadline = time.time() + 10
    while time.time() < deadline:
        db.expire_all()
        v = db.get(DatasetVersion, version.id)
        if v.status == "ready":
            break
        time.sleep(0.2)
    assert v.status == "ready" and v.counts["total"] == 20
    assert v.attempts == 1, "two deliveries, one build"
    assert json.dumps(v.stats)


def test_reasoning_frozen_in_think_blocks_on_request(client, world, db):
    """reasoning=think puts each sample's reasoning before its last answer in every format;
    the default omits it; a bad value is 422 naming the field."""
    w = world
    reasoned = make_sample(db, w["project"], conv(99, turns=2))
    reasoned.reasoning = "  The clause says 30 days; 付款 means payment.  "
    db.commit()
    ds = _dataset(client, w, name="reasoning")
    bad = client.post(f"{w['base']}/{ds['id']}/versions", json={"reasoning": "inline"},
                      headers=w["lead"].headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "body.reasoning"
    omit = _version(client, w, ds, split={"train": 1, "validation": 0, "test": 0})
    think = _version(client, w, ds, split={"train": 1, "validation": 0, "test": 0}, reasoning="think")
    assert (omit["reasoning"], think["reasoning"]) == ("omit", "think")
    assert think["stats"]["reasoning"] == {"mode": "think", "samples_with_reasoning": 1}
    by_version = {}
    for v in (omit, think):
        r = client.post(f"{w['base']}/{ds['id']}/versions/{v['id']}/exports",
                        json={"format": "alpaca"}, headers=w["lead"].headers)
        assert r.status_code in (200, 201, 202), r.text
        base = f"{w['base']}/{ds['id']}/versions/{v['id']}/exports/alpaca"
        lines = client.get(f"{base}/files/train.jsonl", headers=w["lead"].headers).text.splitlines()
        manifest = client.get(f"{base}/files/manifest.json", headers=w["lead"].headers).json()
        assert manifest["reasoning"] == v["reasoning"]
        by_version[v["reasoning"]] = [json.loads(line) for line in lines]
    answer = conv(99, turns=2)[-1]["content"]
    mine = [r for r in by_version["think"] if r["output"].endswith(answer)]
    assert len(mine) == 1
    assert mine[0]["output"] == ("<think>\nThe clause says 30 days; 付款 means payment.\n</think>\n\n"
                                 + answer)
    assert mine[0]["history"][0][1] == conv(99, turns=2)[1]["content"]  # earlier turns untouched
    assert all("<think>" not in r["output"] for r in by_version["omit"])
    others = [r for r in by_version["think"] if r is not mine[0]]
    assert all("<think>" not in r["output"] for r in others)  # no reasoning, nothing added
