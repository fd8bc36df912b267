"""The domain tree: built by a provider (the project's fake OpenAI server), edited over REST,
used by a judge job to tag samples, and by the samples filter, bulk actions, version filters
and the coverage view."""
from __future__ import annotations

from sqlalchemy import select

from service.models import DomainNode, Project, Sample, User
from tests.diversity.conftest import make_documents, make_provider, responder
from tests.support.openai_server import FakeOpenAIServer


def _sample(client, owner, pid, question: str) -> int:
    resp = client.post(f"/api/v1/projects/{pid}/samples", headers=owner.headers, json={
        "messages": [{"role": "user", "content": question},
                     {"role": "assistant", "content": "An answer."}]})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _leaves(tree: dict) -> dict[str, int]:
    out = {}

    def walk(nodes, path):
        for n in nodes:
            here = (*path, n["name"])
            if n["leaf"]:
                out[" › ".join(here)] = n["id"]
            walk(n["children"], here)

    walk(tree["roots"], ())
    return out


def test_tree_built_edited_used_to_tag_filter_bulk_and_freeze(client, db, project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    make_documents(db, pid)
    with FakeOpenAIServer(responder=responder) as server:
        prov = make_provider(client, owner, pid, server.url)
        job = client.post(f"{api}/domain-tree/build", headers=owner.headers,
                          json={"provider_id": prov, "levels": 2})
        assert job.status_code == 202, job.text
        job = client.get(f"{api}/diversity-jobs/{job.json()['id']}", headers=owner.headers).json()
        assert job["status"] == "succeeded", job
        assert job["result"]["leaves"] == 4 and job["result"]["usage"]["requests"] == 1
        prompt = server.requests[0]["json"]["messages"][0]["content"]
        assert "guide0.md › Chapter 0 › Part 1" in prompt  # the TOC
        assert "LoRA trains low-rank matrices 1-2" in prompt  # a sampled chunk
        # a second build needs replace
        again = client.post(f"{api}/domain-tree/build", headers=owner.headers,
                            json={"provider_id": prov})
        assert again.status_code == 409 and again.json()["error"]["code"] == "tree_exists"

        tree = client.get(f"{api}/domain-tree", headers=owner.headers).json()
        leaves = _leaves(tree)
        assert set(leaves) == {"Fine-tuning › LoRA", "Fine-tuning › Full fine-tuning",
                               "Serving › Quantisation", "Serving › Batching"}
        fine = next(n for n in tree["roots"] if n["name"] == "Fine-tuning")["id"]
        serving = next(n for n in tree["roots"] if n["name"] == "Serving")["id"]
        # edit: rename, add, move, merge, delete
        r = client.patch(f"{api}/domain-nodes/{leaves['Serving › Batching']}",
                         headers=owner.headers, json={"name": "  Request   batching "})
        assert r.status_code == 200 and r.json()["name"] == "Request batching"
        adapters = client.post(f"{api}/domain-nodes", headers=owner.headers,
                               json={"name": "Adapters", "parent_id": serving}).json()["id"]
        r = client.patch(f"{api}/domain-nodes/{adapters}", headers=owner.headers,
                         json={"parent_id": fine})
        assert r.status_code == 200 and r.json()["parent_id"] == fine
        bad = client.patch(f"{api}/domain-nodes/{fine}", headers=owner.headers,
                           json={"parent_id": adapters})
        assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "body.parent_id"
        deep = client.post(f"{api}/domain-nodes", headers=owner.headers,
                           json={"name": "Rank", "parent_id": leaves["Fine-tuning › LoRA"]}).json()
        too_deep = client.post(f"{api}/domain-nodes", headers=owner.headers,
                               json={"name": "Too deep", "parent_id": deep["id"]})
        assert too_deep.status_code == 422
        assert too_deep.json()["error"]["details"][0]["field"] == "body.parent_id"
        blank = client.post(f"{api}/domain-nodes", headers=owner.headers, json={"name": "   "})
        assert blank.status_code == 422 and blank.json()["error"]["details"][0]["field"] == "body.name"
        assert client.delete(f"{api}/domain-nodes/{deep['id']}",
                             headers=owner.headers).status_code == 204
        merged = client.post(f"{api}/domain-nodes/{adapters}/merge", headers=owner.headers,
                             json={"into_id": leaves["Fine-tuning › LoRA"]})
        assert merged.status_code == 200
        assert db.get(DomainNode, adapters) is None
        leaves = _leaves(client.get(f"{api}/domain-tree", headers=owner.headers).json())
        assert set(leaves) == {"Fine-tuning › LoRA", "Fine-tuning › Full fine-tuning",
                               "Serving › Quantisation", "Serving › Request batching"}

        # tag: a judge names each sample's leaf
        lora = [_sample(client, owner, pid, f"How does LoRA pick rank {i}?") for i in range(3)]
        quant = [_sample(client, owner, pid, "Is Quantisation lossy?")]
        job = client.post(f"{api}/domain-tree/tag", headers=owner.headers,
                          json={"provider_id": prov}).json()
        job = client.get(f"{api}/diversity-jobs/{job['id']}", headers=owner.headers).json()
        assert job["status"] == "succeeded" and job["result"]["tagged"] == 4, job
        assert "1. Fine-tuning › LoRA" in server.requests[-1]["json"]["messages"][0]["content"]
    db.expire_all()
    assert {db.get(Sample, s).domain_leaf_id for s in lora} == {leaves["Fine-tuning › LoRA"]}
    assert db.get(Sample, quant[0]).domain_leaf_id == leaves["Serving › Quantisation"]

    # the samples filter, bulk actions and coverage by leaf
    listed = client.get(f"{api}/samples?domain_leaf_id={leaves['Fine-tuning › LoRA']}",
                        headers=owner.headers).json()["items"]
    assert sorted(s["id"] for s in listed) == lora
    assert all(s["domain_leaf_id"] == leaves["Fine-tuning › LoRA"] for s in listed)
    bulk = client.post(f"{api}/samples-bulk", headers=owner.headers, json={
        "filter": {"domain_leaf_id": leaves["Fine-tuning › LoRA"]}, "status": "accepted"})
    assert bulk.status_code == 200 and bulk.json()["changed"] == 3, bulk.text
    client.post(f"{api}/samples/{quant[0]}/status", headers=owner.headers,
                json={"version": 1, "status": "accepted"})
    cov = client.get(f"{api}/coverage", headers=owner.headers).json()
    rows = {r["path"]: r for r in cov["leaves"]}
    assert rows["Fine-tuning › LoRA"]["samples"] == 3 and rows["Fine-tuning › LoRA"]["accepted"] == 3
    assert rows["Fine-tuning › LoRA"]["accepted_share"] == 1.0
    assert rows["Serving › Quantisation"]["samples"] == 1
    assert {r["path"] for r in cov["empty_leaves"]} == {"Fine-tuning › Full fine-tuning",
                                                         "Serving › Request batching"}
    assert cov["untagged"] == 0 and cov["tagged"] == 4

    # a dataset version takes only the chosen leaves
    ds = client.post(f"{api}/datasets", headers=owner.headers, json={"name": "lora"}).json()
    version = client.post(f"{api}/datasets/{ds['id']}/versions", headers=owner.headers, json={
        "filter": {"domain_leaf_ids": [leaves["Fine-tuning › LoRA"]]},
        "split": {"train": 1, "validation": 0, "test": 0}})
    assert version.status_code in (200, 201, 202), version.text
    version = client.get(f"{api}/datasets/{ds['id']}/versions/{version.json()['id']}",
                         headers=owner.headers).json()
    assert version["status"] == "ready" and version["counts"]["total"] == 3, version

    # deleting a leaf clears its samples' leaf; they count as untagged
    assert client.delete(f"{api}/domain-nodes/{leaves['Serving › Quantisation']}",
                         headers=owner.headers).status_code == 204
    db.expire_all()
    assert db.get(Sample, quant[0]).domain_leaf_id is None
    assert client.get(f"{api}/coverage", headers=owner.headers).json()["untagged"] == 1


def test_tree_needs_documents_a_tree_to_tag_and_a_known_provider(client, db, project, factories):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    with FakeOpenAIServer(responder=responder) as server:
        prov = make_provider(client, owner, pid, server.url)
        r = client.post(f"{api}/domain-tree/build", headers=owner.headers, json={"provider_id": prov})
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_documents"
        r = client.post(f"{api}/domain-tree/tag", headers=owner.headers, json={"provider_id": prov})
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_tree"
        r = client.post(f"{api}/domain-tree/build", headers=owner.headers,
                        json={"provider_id": prov, "levels": 7})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "body.levels"
        make_documents(db, pid, docs=1)
        r = client.post(f"{api}/domain-tree/build", headers=owner.headers,
                        json={"provider_id": 999999})
        assert r.status_code == 404
        # an annotator may read the tree and the coverage, not edit them
        annotator = factories.make_actor(db)
        factories.add_member(db, db.get(Project, pid), db.get(User, annotator.user_id), "annotator")
        assert client.get(f"{api}/coverage", headers=annotator.headers).status_code == 200
        assert client.post(f"{api}/domain-nodes", headers=annotator.headers,
                           json={"name": "x"}).status_code == 403
    assert db.scalars(select(DomainNode)).all() == []


def test_a_tree_put_whole_and_bad_model_output_fails_the_job_with_a_reason(client, db, project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    make_documents(db, pid, docs=1)
    r = client.put(f"{api}/domain-tree", headers=owner.headers, json={
        "roots": [{"name": "A", "children": ["a1", "a2", "a1"]}, "B"]})
    assert r.status_code == 200 and r.json()["leaves"] == 3
    bad = client.put(f"{api}/domain-tree", headers=owner.headers, json={"roots": [{"kids": []}]})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "body.roots.0"
    with FakeOpenAIServer(responder=lambda req: "I cannot make trees") as server:
        prov = make_provider(client, owner, pid, server.url)
        job = client.post(f"{api}/domain-tree/build", headers=owner.headers,
                          json={"provider_id": prov, "replace": True}).json()
    job = client.get(f"{api}/diversity-jobs/{job['id']}", headers=owner.headers).json()
    assert job["status"] == "failed" and job["error"], job
    assert job["result"]["usage"]["requests"] == 3 == len(server.requests)  # 2 repair rounds
    # the old tree is untouched
    assert client.get(f"{api}/domain-tree", headers=owner.headers).json()["leaves"] == 3


def test_a_version_stratified_by_leaf_splits_each_leaf_in_the_ratios(client, db, project):
    from service.datasets.service import assign_splits
    from service.models import DatasetVersionItem

    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    client.put(f"{api}/domain-tree", headers=owner.headers,
               json={"roots": [{"name": "A", "children": ["a1", "a2"]}]})
    leaves = _leaves(client.get(f"{api}/domain-tree", headers=owner.headers).json())
    a1, a2 = leaves["A › a1"], leaves["A › a2"]
    for i, leaf in enumerate([a1] * 10 + [a2] * 20 + [None] * 10):
        db.add(Sample(project_id=pid, domain_leaf_id=leaf, status="accepted", version=1,
                      messages=[{"role": "user", "content": f"q{i}"},
                                {"role": "assistant", "content": f"a{i}"}]))
    db.commit()
    ds = client.post(f"{api}/datasets", headers=owner.headers, json={"name": "strat"}).json()
    version = client.post(f"{api}/datasets/{ds['id']}/versions", headers=owner.headers, json={
        "stratify_by": "domain_leaf", "seed": 7,
        "split": {"train": 0.8, "validation": 0.1, "test": 0.1}}).json()
    version = client.get(f"{api}/datasets/{ds['id']}/versions/{version['id']}",
                         headers=owner.headers).json()
    assert version["status"] == "ready" and version["stratify_by"] == "domain_leaf", version
    rows = db.execute(select(Sample.domain_leaf_id, DatasetVersionItem.split)
                      .join(DatasetVersionItem, DatasetVersionItem.sample_id == Sample.id)
                      .where(DatasetVersionItem.version_id == version["id"])).all()
    per_leaf: dict = {}
    for leaf, split in rows:
        per_leaf.setdefault(leaf, {}).setdefault(split, 0)
        per_leaf[leaf][split] += 1
    assert per_leaf[a1] == {"train": 8, "validation": 1, "test": 1}
    assert per_leaf[a2] == {"train": 16, "validation": 2, "test": 2}
    assert per_leaf[None] == {"train": 8, "validation": 1, "test": 1}
    # the same ids, seed and leaves always give the same split
    import numpy as np

    ids = np.arange(1, 31, dtype=np.int64)
    groups = np.array([5] * 10 + [6] * 20, dtype=np.int64)
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    first = assign_splits(ids, groups, seed=3, ratios=ratios, stratify_by="domain_leaf")
    again = assign_splits(ids, groups, seed=3, ratios=ratios, stratify_by="domain_leaf")
    assert (first[0] == again[0]).all() and (first[1] == again[1]).all()


def test_a_projects_own_template_overrides_the_built_in_step(client, db, project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    make_documents(db, pid, docs=1)
    bad = client.post(f"{api}/templates", headers=owner.headers, json={
        "name": "domain_tree.en", "kind": "domain_tree", "parser": {"kind": "json"},
        "text": "Tree for {{ outline }} and {{ nosuchthing }}"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "body.text"
    own = client.post(f"{api}/templates", headers=owner.headers, json={
        "name": "domain_tree.en", "kind": "domain_tree", "parser": {"kind": "json"},
        "text": "OUR OWN domain label tree prompt, {{ levels }} levels:\n{{ outline }}"})
    assert own.status_code == 201, own.text
    with FakeOpenAIServer(responder=responder) as server:
        prov = make_provider(client, owner, pid, server.url)
        job = client.post(f"{api}/domain-tree/build", headers=owner.headers,
                          json={"provider_id": prov}).json()
        assert job["params"]["templates"] == {"domain_tree": own.json()["id"]}
        prompt = server.requests[0]["json"]["messages"][0]["content"]
        assert prompt.startswith("OUR OWN domain label tree prompt, 2 levels:\nguide0.md")
        # or named outright; a template of another kind is refused naming the field
        named = client.post(f"{api}/domain-tree/build", headers=owner.headers, json={
            "provider_id": prov, "replace": True, "templates": {"domain_tree": own.json()["id"]}})
        assert named.status_code == 202
        judge = next(t["id"] for t in client.get(f"{api}/templates", headers=owner.headers).json()["items"]
                     if t["kind"] == "judge")
        wrong = client.post(f"{api}/domain-tree/build", headers=owner.headers, json={
            "provider_id": prov, "replace": True, "templates": {"domain_tree": judge}})
        assert wrong.status_code == 422
        assert wrong.json()["error"]["details"][0]["field"] == "body.templates.domain_tree"


def test_a_generation_job_for_one_leaf_tags_its_samples(client, db, project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    make_documents(db, pid, docs=1, chunks=2)
    client.put(f"{api}/domain-tree", headers=owner.headers,
               json={"roots": [{"name": "A", "children": ["a1", "a2"]}]})
    tree = client.get(f"{api}/domain-tree", headers=owner.headers).json()
    leaves = _leaves(tree)
    templates = client.get(f"{api}/templates", headers=owner.headers).json()["items"]
    tid = next(t["id"] for t in templates if t["name"] == "keywords.en")
    with FakeOpenAIServer(responder=responder) as server:
        prov = make_provider(client, owner, pid, server.url)
        for bad in (tree["roots"][0]["id"], 987654):  # an inner node, another project's id
            r = client.post(f"{api}/generation-jobs", headers=owner.headers, json={
                "template_id": tid, "provider_id": prov, "params": {"domain_leaf_id": bad}})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["details"][0]["field"] == "body.params.domain_leaf_id"
        job = client.post(f"{api}/generation-jobs", headers=owner.headers, json={
            "template_id": tid, "provider_id": prov,
            "params": {"domain_leaf_id": leaves["A › a2"]}}).json()
    samples = client.get(f"{api}/samples?generation_job_id={job['id']}",
                         headers=owner.headers).json()["items"]
    assert len(samples) == 2 and {s["domain_leaf_id"] for s in samples} == {leaves["A › a2"]}
    cov = {r["path"]: r["samples"] for r in
           client.get(f"{api}/coverage", headers=owner.headers).json()["leaves"]}
    assert cov == {"A › a1": 0, "A › a2": 2}


def test_tagging_runs_at_the_providers_concurrency_and_reports_what_it_could_not_tag(client, db,
                                                                                   project):
    owner, pid = project
    api = f"/api/v1/projects/{pid}"
    client.put(f"{api}/domain-tree", headers=owner.headers,
               json={"roots": [{"name": "A", "children": ["a1", "a2"]}]})
    ids = [_sample(client, owner, pid, f"question {i} about a1") for i in range(6)]
    ids += [_sample(client, owner, pid, "an off-topic question")]

    def judge(request):  # a leaf number out of range for the off-topic one
        text = request["messages"][-1]["content"]
        return '{"leaf": 9}' if "off-topic" in text else '{"leaf": 1}'

    with FakeOpenAIServer(responder=judge, latency=0.2) as server:
        resp = client.post(f"{api}/providers", headers=owner.headers, json={
            "name": "wide", "base_url": server.url, "model": "m", "max_concurrency": 3})
        job = client.post(f"{api}/domain-tree/tag", headers=owner.headers,
                          json={"provider_id": resp.json()["id"]}).json()
        job = client.get(f"{api}/diversity-jobs/{job['id']}", headers=owner.headers).json()
        assert server.max_in_flight >= 2
    assert job["status"] == "succeeded" and job["result"]["tagged"] == 6, job
    assert job["result"]["failed"] == 1 and "1..2" in job["result"]["errors"][0]
    db.expire_all()
    assert db.get(Sample, ids[-1]).domain_leaf_id is None
    assert {db.get(Sample, i).domain_leaf_id for i in ids[:-1]} == {_leaves(client.get(
        f"{api}/domain-tree", headers=owner.headers).json())["A › a1"]}
    # only the untagged one is asked again; when nothing can be tagged the job fails
    with FakeOpenAIServer(responder=judge) as server:
        resp = client.post(f"{api}/providers", headers=owner.headers, json={
            "name": "again", "base_url": server.url, "model": "m"})
        job = client.post(f"{api}/domain-tree/tag", headers=owner.headers,
                          json={"provider_id": resp.json()["id"]}).json()
        job = client.get(f"{api}/diversity-jobs/{job['id']}", headers=owner.headers).json()
        assert len(server.requests) == 1
    assert job["status"] == "failed" and "nothing produced" in job["error"], job
