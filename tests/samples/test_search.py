"""Text search over what the messages say (``service/samples/search.py``): Chinese with no
spaces, a word in a system prompt, a phrase, any case or width; JSON keys, roles and escapes never
match; the index follows every write (create, edit, import, delete; generation:
tests/generation/test_gate.py) on both backends, and PostgreSQL answers it from the trigram
index."""
from __future__ import annotations

import orjson
import pytest
from sqlalchemy import func, select, text

from service.models import Sample
from service.samples import search
from service.samples import service as samples_service


def conv(user: str, answer: str, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]


CORPUS = [
    conv("如何安装软件包？", "用包管理器安装软件包。"),                       # 0
    conv("什么是软件包管理器？", "它负责安装和升级。", system="你是运维助手"),  # 1
    conv("Ubuntu 的软件包格式", "deb"),                                      # 2
    conv("What is LoRA?", "Low-rank  adapters\ntrained beside frozen weights."),  # 3
    conv("Explain QLoRA", "LoRA on a 4-bit base.", system="You are a patient tutor."),  # 4
    conv("100% sure?", "Yes: snake_case and back\\slash."),                  # 5
    conv("Ask a question", "answer follows"),                               # 6
    conv("Ｆｕｌｌ ｗｉｄｔｈ ＬｏＲＡ", "ok"),                                 # 7
]


@pytest.fixture
def corpus(db, factories, client):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "search"},
                      headers=owner.headers).json()["id"]
    ids = [samples_service.create_sample(db, project_id=pid, messages=m).id for m in CORPUS]
    db.commit()
    return owner, pid, ids


def _found(client, owner, pid, q):
    resp = client.get(f"/api/v1/projects/{pid}/samples", params={"q": q, "limit": 500},
                      headers=owner.headers)
    assert resp.status_code == 200, resp.text
    return [s["id"] for s in resp.json()["items"]]


def test_finds_what_the_messages_say(client, db, corpus):
    owner, pid, ids = corpus
    assert _found(client, owner, pid, "软件包") == ids[0:3]       # Chinese, no spaces
    assert _found(client, owner, pid, "软件") == ids[0:3]         # two characters: the LIKE path
    assert _found(client, owner, pid, "运维助手") == [ids[1]]      # in a system prompt
    assert _found(client, owner, pid, "patient tutor") == [ids[4]]
    assert _found(client, owner, pid, "rank adapters trained") == [ids[3]]  # a phrase, any spacing
    assert _found(client, owner, pid, "lora") == [ids[3], ids[4], ids[7]]  # any case, any width
    assert _found(client, owner, pid, "LoRA on a 4-bit") == [ids[4]]
    assert _found(client, owner, pid, "100%") == [ids[5]]
    assert _found(client, owner, pid, "snake_case") == [ids[5]]
    assert _found(client, owner, pid, "back\\slash") == [ids[5]]


@pytest.mark.parametrize("q", ["role", "content", "assistant", "user", '"role"', "\\u8f6f",
                               "question answer", '{"', "%", "_"])
def test_json_keys_escapes_and_message_boundaries_never_match(client, db, corpus, q):
    owner, pid, ids = corpus
    found = _found(client, owner, pid, q)
    if q in ("%", "_"):  # literal characters, not wildcards
        assert found == [ids[5]]
    else:
        assert found == []


def test_blank_query_is_no_filter(client, db, corpus):
    owner, pid, ids = corpus
    assert _found(client, owner, pid, "   ") == ids
    flt = samples_service.SampleFilter(q="软件包")
    assert samples_service.count_samples(db, project_id=pid, flt=flt) == 3


def test_the_index_follows_every_write(client, db, corpus):
    owner, pid, ids = corpus
    base = f"/api/v1/projects/{pid}"
    resp = client.patch(f"{base}/samples/{ids[2]}", headers=owner.headers,
                        json={"version": 1, "messages": conv("Ubuntu 的镜像格式", "iso")})
    assert resp.status_code == 200
    assert _found(client, owner, pid, "软件包") == ids[0:2]
    assert _found(client, owner, pid, "镜像格式") == [ids[2]]
    line = orjson.dumps({"messages": conv("导入的软件包", "imported")})
    client.post(f"{base}/imports", headers=owner.headers, data={"mode": "strict"},
                files={"file": ("i.jsonl", line, "application/jsonl")})
    imported = _found(client, owner, pid, "导入的软件包")
    assert len(imported) == 1
    assert db.get(Sample, imported[0]).search_text == "导入的软件包\nimported"
    assert client.delete(f"/api/v1/projects/{pid}", headers=owner.headers).status_code in (200, 204)
    db.expire_all()
    if db.get_bind().dialect.name == "sqlite":
        # the FTS index lost the deleted rows with them (its delete trigger)
        left = db.execute(text(f"SELECT count(*) FROM {search.FTS_TABLE} "
                               f"WHERE {search.FTS_TABLE} MATCH :q"), {"q": '"软件包"'}).scalar()
        assert left == 0


def test_fold():
    assert search.fold("  Ｌｏ　RA\n\tSTRASSE  ") == "lo ra strasse"
    assert search.fold("Straße") == "strasse"
    assert search.search_text([{"role": "user", "content": "A  b"},
                               {"role": "assistant", "content": "C"}]) == "a b\nc"


def test_postgresql_answers_from_the_trigram_index(db, corpus):
    if db.get_bind().dialect.name != "postgresql":
        pytest.skip("the trigram index exists on PostgreSQL only")
    clause = search.clause(db, "软件包")
    stmt = select(func.count()).select_from(Sample).where(clause)
    db.execute(text("ANALYZE samples"))
    db.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask whether it *can*
    compiled = stmt.compile(dialect=db.get_bind().dialect,
                            compile_kwargs={"render_postcompile": True})
    plan = "\n".join(r[0] for r in db.connection().exec_driver_sql(
        "EXPLAIN " + str(compiled), compiled.params))
    db.rollback()
    assert search.PG_INDEX in plan, plan


def test_migration_fills_existing_samples(tmp_path):
    """A database with samples from before the column: 0013 fills their search text and, on
    SQLite, indexes them."""
    from sqlalchemy import create_engine

    from service.core import migrate

    url = f"sqlite:///{tmp_path / 's.db'}"
    migrate.upgrade(url, "20261201_0012_provider_job")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, name, description, settings, created_at, "
                          "updated_at) VALUES (1, 'p', '', '{}', '2026-01-01', '2026-01-01')"))
        conn.execute(text(
            "INSERT INTO samples (project_id, messages, status, version, content_hash, source, "
            "provenance, tags, scores, created_at, updated_at) VALUES (1, :m, 'pending', 1, 'h', "
            "'manual', '{}', '[]', '{}', '2026-01-01', '2026-01-01')"),
            {"m": orjson.dumps(conv("旧的软件包", "old")).decode()})
    engine.dispose()
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT search_text FROM samples")).scalar() == "旧的软件包\nold"
        hits = conn.execute(text(f"SELECT rowid FROM {search.FTS_TABLE} WHERE "
                                 f"{search.FTS_TABLE} MATCH '\"软件包\"'")).all()
        assert len(hits) == 1
    engine.dispose()



@pytest.mark.parametrize("q", ["soft\x00ware", "\x00", "软件\ud800包", "lora \x00adapters"])
def test_a_nul_or_lone_surrogate_in_the_query_is_refused_never_a_500(client, db, corpus, q):
    owner, pid, _ids = corpus
    if "\x00" in q:  # (an HTTP client cannot send a lone surrogate: it is not UTF-8)
        resp = client.get(f"/api/v1/projects/{pid}/samples", params={"q": q},
                          headers=owner.headers)
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["details"][0]["field"] == "query.q"
        page = client.get(f"/projects/{pid}/samples", params={"q": q}, headers=owner.headers)
        assert page.status_code == 422, page.text
    # in-process (a task running a stored filter): it matches nothing, on both databases
    flt = samples_service.SampleFilter(q=q)
    rows, nxt = samples_service.list_samples(db, project_id=pid, flt=flt, limit=5, cursor=None)
    assert (rows, nxt) == ([], None)
    assert samples_service.count_samples(db, project_id=pid, flt=flt) == 0
