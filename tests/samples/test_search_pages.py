"""Pages of a text search on PostgreSQL (``search.pg_page``): the bounded walk in list order and
the trigram-index fallback give the same pages, cursor after cursor and in every sort order, as
the plain filter would, for a term in every sample, one only the newest samples hold, and one no
sample holds. The walk is shortened (``probe_rows``) so a small project crosses it."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from service.samples import search
from service.samples import service as samples_service

N = 120


def conv(i: int) -> list[dict[str, str]]:
    late = " 只有新样本提到熔断器模式" if i >= N - 7 else ""
    return [{"role": "user", "content": f"Question {i} about checksums"},
            {"role": "assistant", "content": f"Answer {i}: compare the checksum.{late}"}]


@pytest.fixture
def project(db, factories, client):
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("pg_page is the PostgreSQL path")
    # the tests read the table's physical order: earlier tests' deleted rows left free space
    # in its first pages, where these rows (or an edit's new version) could land
    with db.get_bind().engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM FULL samples")
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "search pages"},
                      headers=owner.headers).json()["id"]
    ids = [samples_service.create_sample(db, project_id=pid, messages=conv(i)).id for i in range(N)]
    db.commit()
    return owner, pid, ids


def _walk(client, owner, pid, q: str, sort: str, limit: int) -> list[int]:
    seen: list[int] = []
    params: dict[str, str | int] = {"q": q, "limit": limit, "sort": sort}
    while True:
        resp = client.get(f"/api/v1/projects/{pid}/samples", params=params, headers=owner.headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["items"]) <= limit
        seen += [s["id"] for s in body["items"]]
        if not body["next_cursor"]:
            return seen
        params["cursor"] = body["next_cursor"]


@contextmanager
def _statements(db) -> Iterator[list[str]]:
    """The SQL statements run meanwhile."""
    statements: list[str] = []
    engine = db.get_bind().engine

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("sort", ["id", "-id", "-updated_at", "created_at"])
def test_pages_match_the_plain_filter(client, db, project, monkeypatch, sort):
    owner, pid, ids = project
    monkeypatch.setattr(search, "probe_rows", lambda limit: 3 * limit)
    calls: list[int] = []
    real = search.pg_page
    monkeypatch.setattr(search, "pg_page", lambda db, **kw: calls.append(1) or real(db, **kw))
    ordered = ids[::-1] if sort.startswith("-") else ids
    assert _walk(client, owner, pid, "CHECKSUM", sort, 7) == ordered          # every sample
    assert _walk(client, owner, pid, "熔断器模式", sort, 4) == [i for i in ordered if i in ids[-7:]]
    assert _walk(client, owner, pid, "compare the  Checksum", sort, 9) == ordered  # a phrase
    assert _walk(client, owner, pid, "新样本提到 熔断", sort, 4) == []  # no such phrase
    assert _walk(client, owner, pid, "no such words", sort, 5) == []
    assert calls  # the API went through pg_page


def test_the_walk_answers_a_common_term_and_the_index_a_rare_one(db, project, monkeypatch):
    _owner, pid, ids = project
    monkeypatch.setattr(search, "probe_rows", lambda limit: 3 * limit)
    with _statements(db) as statements:
        flt = samples_service.SampleFilter(q="checksum")
        rows, _ = samples_service.list_samples(db, project_id=pid, flt=flt, limit=5, cursor=None)
        assert [r.id for r in rows] == ids[:5]
        assert not any("MATERIALIZED" in s for s in statements)  # the walk held a full page
        statements.clear()
        flt = samples_service.SampleFilter(q="熔断器模式")
        rows, _ = samples_service.list_samples(db, project_id=pid, flt=flt, limit=5, cursor=None)
        assert [r.id for r in rows] == ids[-7:-2]
        assert any("MATERIALIZED" in s for s in statements)  # the index found the rest


@pytest.mark.parametrize(("q", "index"), [("checksum", search.PG_INDEX),
                                          ("compare the checksum", search.PG_PHRASE_INDEX)])
def test_a_word_uses_the_plain_index_and_a_phrase_the_phrase_index(db, project, q, index):
    from sqlalchemy import func, select, text

    from service.models import Sample

    stmt = select(func.count()).select_from(Sample).where(search.clause(db, q))
    db.execute(text("ANALYZE samples"))
    db.execute(text("SET LOCAL enable_seqscan = off"))  # a small table: ask whether it *can*
    compiled = stmt.compile(dialect=db.get_bind().dialect,
                            compile_kwargs={"render_postcompile": True})
    plan = "\n".join(r[0] for r in db.connection().exec_driver_sql(
        "EXPLAIN " + str(compiled), compiled.params))
    db.rollback()
    assert index in plan, plan


def test_the_bound_on_id_finds_a_match_that_an_edit_moved_down_the_table(client, db, project,
                                                                         monkeypatch):
    """Listed by id, the first matches in the table's physical order bound the page
    (``pg_page``); an edited sample's row is written after the newest ones, and its small id
    still comes first."""
    from sqlalchemy import text

    owner, pid, ids = project
    monkeypatch.setattr(search, "probe_rows", lambda limit: 3 * limit)
    moved = ids[2]
    resp = client.patch(f"/api/v1/projects/{pid}/samples/{moved}", headers=owner.headers,
                        json={"version": 1, "messages": conv(N - 1)})  # now says 熔断器模式
    assert resp.status_code == 200, resp.text
    db.expire_all()
    blocks = dict(db.execute(text("SELECT id, (ctid::text::point)[0] * 1000 + "
                                  "(ctid::text::point)[1] FROM samples WHERE id = ANY(:ids)"),
                             {"ids": [moved, ids[-7]]}).all())
    assert blocks[moved] > blocks[ids[-7]]  # the edit wrote the row after the newest ones
    with _statements(db) as statements:
        assert _walk(client, owner, pid, "熔断器模式", "id", 4) == [moved, *ids[-7:]]
        assert _walk(client, owner, pid, "新样本提到熔断器", "-id", 3) == [*ids[-7:][::-1], moved]
    assert any("first AS MATERIALIZED" in s for s in statements)  # the bound was taken
