"""Tag and score criteria are SQL clauses shared by a version's filter and the samples list:
checked against a plain-Python statement of what they mean, on every combination of a population
of awkward tags and scores, on both databases (this file runs in the SQLite pass too)."""
from __future__ import annotations

import itertools
from typing import Any

import pytest
from sqlalchemy import select

from service.datasets import service as datasets_service
from service.datasets.schemas import VersionFilter
from service.models import Sample
from service.samples import service as samples_service
from tests.datasets.test_service import conv, make_sample

TAG_SETS: list[list[str]] = [[], ["a"], ["b"], ["a", "b"], ["A"], ["法律"], ['a"b'], ["a,b"],
                             ["b", "法律", "x"]]
KEYS = ["q", 'q"x', "q.x"]
# numbers, and what is not one: a judge's rationale, labels, booleans, null, nested values
VALUES: list[Any] = [0, 1, -1, 2, 0.5, 2.5, -0.0, 1e300, -1e-300, 7, True, False, None, "3",
                     "high", "", [1], {"v": 1}]
MISSING = object()


def _means(flt: VersionFilter, tags: list[str], scores: dict[str, Any]) -> bool:
    """What the filter's tags and score say: any of the tags; the score a number (never a
    boolean), compared as a double, within the bounds."""
    if flt.tags is not None and not set(tags) & set(flt.tags):
        return False
    if flt.score is not None:
        value = scores.get(flt.score.key, MISSING)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        value = float(value)
        if flt.score.min is not None and value < flt.score.min:
            return False
        if flt.score.max is not None and value > flt.score.max:
            return False
    return True


@pytest.fixture
def population(db, factories):
    owner = factories.make_user(db)
    project = factories.make_project(db, owner)
    rows: dict[int, tuple[list[str], dict[str, Any]]] = {}
    n = 0
    for tags, key, value in itertools.product(TAG_SETS, KEYS, [*VALUES, MISSING]):
        n += 1
        if (n % 3) and key != "q":  # the odd keys on a third of the rows is enough
            continue
        scores = {} if value is MISSING else {key: value}
        if n % 5 == 0:
            scores["other"] = 1  # a second, unrelated score
        rows[make_sample(db, project, conv(n), tags=tags, scores=scores).id] = (tags, scores)
    db.commit()
    return project, rows


def _bounds() -> list[float | None]:
    numbers = sorted({float(v) for v in VALUES
                      if isinstance(v, int | float) and not isinstance(v, bool)})
    between = [(a + b) / 2 for a, b in itertools.pairwise(numbers)]
    return [None, -1e308, 1e308, *numbers, *between]


def test_version_filter_and_samples_list_take_what_the_criteria_mean(db, population):
    project, rows = population
    dialect = db.get_bind().dialect.name
    filters = [VersionFilter(tags=t) for t in
               ([], ["a"], ["b", "a"], ["法律"], ['a"b'], ["a,b"], ["A"], ["zz"], ["a", "a"])]
    for key in KEYS + ["missing"]:
        for lo, hi in itertools.product(_bounds(), repeat=2):
            if lo is not None and hi is not None and lo > hi:
                continue
            if key != "q" and not (lo is None or hi is None):
                continue  # the odd keys: one-sided ranges
            filters.append(VersionFilter(score={"key": key, "min": lo, "max": hi}))
    filters += [VersionFilter(tags=["a"], score={"key": "q", "min": 0.5}),
                VersionFilter(tags=["b", "法律"], score={"key": "q", "max": 1})]
    assert len(filters) > 150
    partial = 0  # filters that take some samples but not all: the comparison means something
    for flt in filters:
        want = sorted(i for i, (tags, scores) in rows.items() if _means(flt, tags, scores))
        ids, _ = datasets_service.select_candidates(db, project_id=project.id, flt=flt)
        assert ids.tolist() == want, flt
        partial += 0 < len(want) < len(rows)
        if flt.score is not None and flt.tags is None and (flt.score.min is not None
                                                           or flt.score.max is not None):
            listed = samples_service.SampleFilter(score_key=flt.score.key,
                                                  score_min=flt.score.min,
                                                  score_max=flt.score.max).clauses(db, project.id)
            assert sorted(db.scalars(select(Sample.id).where(*listed))) == want, flt
        if flt.tags and flt.score is None:
            listed = [Sample.project_id == project.id, samples_service.has_any_tag(dialect, flt.tags)]
            assert sorted(db.scalars(select(Sample.id).where(*listed))) == want, flt
    assert partial > 100, partial


def test_a_score_filter_through_the_api_skips_what_is_not_a_number(client, db, factories):
    """The samples list's ``score_key`` on a judge's rationale (text) and on labels: no 422 on
    PostgreSQL (a cast of the first such row), no text or ``true`` compared as a number on
    SQLite; a version built with the same score range takes the same samples."""
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "scores"}, headers=owner.headers).json()["id"]
    made = []
    for scores in [{"judge": 4, "judge_rationale": "fine <b>"}, {"judge": True}, {"judge": "high"},
                   {"judge": 2.5}, {"judge": None}, {}]:
        s = samples_service.create_sample(db, project_id=pid, messages=conv(len(made)),
                                          scores=scores)
        s.status = "accepted"
        made.append(s.id)
    db.commit()

    def listed(**params: Any) -> list[int]:
        resp = client.get(f"/api/v1/projects/{pid}/samples", params=params, headers=owner.headers)
        assert resp.status_code == 200, resp.text
        return [s["id"] for s in resp.json()["items"]]

    assert listed(score_key="judge", score_min=3) == [made[0]]
    assert listed(score_key="judge", score_max=3) == [made[3]]
    assert listed(score_key="judge", score_min=0) == [made[0], made[3]]
    assert listed(score_key="judge_rationale", score_min=-1e9) == []
    ds = client.post(f"/api/v1/projects/{pid}/datasets", headers=owner.headers,
                     json={"name": "d"}).json()
    version = client.post(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions", headers=owner.headers, json={
        "filter": {"score": {"key": "judge", "min": 0}},
        "split": {"train": 1, "validation": 0, "test": 0}})
    assert version.status_code in (201, 202), version.text
    got = client.get(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions/{version.json()['id']}",
                     headers=owner.headers).json()
    assert got["status"] == "ready" and got["counts"]["train"] == 2, got


@pytest.mark.parametrize("bound", ["nan", "inf", "-inf", "Infinity"])
def test_a_bound_that_is_not_a_finite_number_is_refused_naming_it(client, db, factories, bound):
    """Not silently "no sample" (NaN compares false in SQL) nor "every sample" (in Python):
    a 422 naming the field, for the list's query parameter and a version's filter."""
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "b"}, headers=owner.headers).json()["id"]
    resp = client.get(f"/api/v1/projects/{pid}/samples",
                      params={"score_key": "judge", "score_max": bound}, headers=owner.headers)
    assert resp.status_code == 422, resp.text
    assert [d["field"] for d in resp.json()["error"]["details"]] == ["query.score_max"], resp.text
    ds = client.post(f"/api/v1/projects/{pid}/datasets", headers=owner.headers,
                     json={"name": "d"}).json()
    literal = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(bound, bound)
    resp = client.post(f"/api/v1/projects/{pid}/datasets/{ds['id']}/versions",
                       headers={**owner.headers, "content-type": "application/json"},
                       content='{"filter": {"score": {"key": "judge", "min": ' + literal + "}}}")
    assert resp.status_code == 422, resp.text
    fields = [d["field"] for d in resp.json()["error"]["details"]]
    assert fields == ["body.filter.score.min"], resp.text
