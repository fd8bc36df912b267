"""Two-character terms and phrases (``service/samples/search.py``, migration 0018), on both
backends: what the list finds equals a brute-force substring search of the same corpus, for
two-character terms anywhere in a text (its end included) and phrases of common and rare
words; and the two-character terms come from an index, not a scan."""
from __future__ import annotations

import random
import re

import pytest
from sqlalchemy import func, select, text

from service.models import Sample
from service.samples import search
from service.samples import service as samples_service


def conv(user: str, answer: str, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]


CORPUS = [
    conv("什么是熔断？", "熔断器在下游出错时断开调用。"),
    conv("服务降级和熔断有什么区别", "降级返回默认值，熔断"),            # the term ends the text
    conv("熔断", "熔断"),                                               # the whole message
    conv("数据库的连接池", "连接池满了就排队", system="你是数据库专家"),
    conv("データベースの設定は？", "設定ファイルを編集します。"),        # kana and kanji
    conv("데이터 베이스 설정", "설정 파일"),                             # Hangul
    conv("𠀀𠀁是扩展字", "𠀁𠀂"),                                        # beyond the BMP
    conv("使用db连接", "db连接要关闭"),                                 # Latin inside Chinese
    conv("Ｆｕｌｌ　ｗｉｄｔｈ 熔断", "ＤＢ ok"),
    conv("Where is the lease held?", "The lease on the primary replica is held for ten seconds."),
    conv("What is on the primary?", "On the primary, the replica lease is renewed."),
    conv("lease on the", "primary replica lease on the primary replica"),
    conv("Explain the model", "The model reads the data; model data is cached."),
    conv("rolling back the migration", "Roll back the migration first, then rolling back the "
         "data is safe."),
    conv("the the the", "on the other hand, the other one"),
    conv("a b", "ab ba a  b"),
]
ABSENT = ["量子", "纠缠", "ザ", "힣힣", "zz", "the lease replica", "primary lease on",
          "model the data", "rolling the back"]


@pytest.fixture
def corpus(db, factories, client):
    owner = factories.make_actor(db)
    pid = client.post("/api/v1/projects", json={"name": "terms"},
                      headers=owner.headers).json()["id"]
    texts = {}
    for messages in CORPUS:
        sample = samples_service.create_sample(db, project_id=pid, messages=messages)
        texts[sample.id] = search.search_text(messages)
    db.commit()
    return pid, texts


def _listed(db, pid: int, q: str) -> list[int]:
    flt = samples_service.SampleFilter(q=q)
    rows, nxt = samples_service.list_samples(db, project_id=pid, flt=flt, limit=500, cursor=None)
    assert nxt is None
    db.expunge_all()
    return [r.id for r in rows]


def _brute(texts: dict[int, str], q: str) -> list[int]:
    needle = search.fold(q)
    return sorted(i for i, t in texts.items() if needle in t)


def _pairs(texts: dict[int, str], n: int) -> list[str]:
    """``n`` two-character substrings of the corpus, drawn the same way every run."""
    every = sorted({t[i:i + 2] for t in texts.values() for i in range(len(t) - 1)} - {""})
    every = [p for p in every if "\n" not in p and p.strip() == p]
    return random.Random(7).sample(every, min(n, len(every)))


def _phrases(texts: dict[int, str], n: int) -> list[str]:
    """``n`` runs of two to four words of the corpus's English lines."""
    out = set()
    rng = random.Random(11)
    lines = [ln for t in texts.values() for ln in t.split("\n") if re.search("[a-z]", ln)]
    while len(out) < n:
        words = rng.choice(lines).split(" ")
        if len(words) < 2:
            continue
        k = rng.randint(2, min(4, len(words)))
        start = rng.randrange(len(words) - k + 1)
        out.add(" ".join(words[start:start + k]))
    return sorted(out)


def test_two_character_terms_equal_a_brute_force_search(db, corpus):
    pid, texts = corpus
    terms = ["熔断", "断器", "连接", "数据", "设定", "設定", "ベー", "데이", "𠀁𠀂", "db", "DB", "ｄｂ",
             *_pairs(texts, 25), *ABSENT[:5]]
    for q in terms:
        assert _listed(db, pid, q) == _brute(texts, q), q
    assert _brute(texts, "熔断") == sorted(texts)[:3] + [sorted(texts)[8]]  # the end of a text too
    assert samples_service.count_samples(db, project_id=pid,
                                         flt=samples_service.SampleFilter(q="熔断")) == 4


def test_phrases_equal_a_brute_force_search(db, corpus):
    pid, texts = corpus
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("ANALYZE samples"))  # the planner's sample the phrase plan reads
        search.forget_planner_sample()
        assert search.planner_sample(db).texts
    phrases = ["lease on the primary replica", "the primary replica", "on the primary",
               "model data", "the model", "rolling back the migration", "the the",
               "on the other hand", "a b", "full width 熔断", *_phrases(texts, 15), *ABSENT[5:]]
    for q in phrases:
        assert _listed(db, pid, q) == _brute(texts, q), q
    assert len(_brute(texts, "lease on the primary replica")) == 2
    search.forget_planner_sample()


def test_phrase_pattern_reads_the_rare_trigrams_and_stays_a_necessary_condition():
    j = search.JOIN
    sample = search.TextSample.of(["the cat on the mat", "on the other hand", "the end"] * 30
                                  + ["primary key", "read replica"])
    pattern = search.phrase_pattern("lease on the primary replica", sample)
    assert "the" not in pattern and f"{j}th" not in pattern  # in every text: never read
    assert pattern.startswith("%") and pattern.endswith("%")
    # without statistics every trigram is read: the whole phrase
    assert search.phrase_pattern("on the mat", search.TextSample()) == f"%on{j}the{j}mat%"
    assert search.phrase_pattern("a b", sample) == f"%a{j}b%"  # no trigram: the whole phrase
    rng = random.Random(3)
    words = ["the", "on", "lease", "primary", "replica", "of", "model", "data", "热", "熔断器"]
    for _ in range(200):
        phrase = " ".join(rng.choice(words) for _ in range(rng.randint(2, 5)))
        pattern = search.phrase_pattern(phrase, sample)
        regex = ".*".join(re.escape(p) for p in pattern.strip("%").split("%"))
        assert re.search(regex, phrase.replace(" ", j)), (phrase, pattern)


def _plan(db, clause) -> str:
    stmt = select(func.count()).select_from(Sample).where(clause)
    compiled = stmt.compile(dialect=db.get_bind().dialect,
                            compile_kwargs={"render_postcompile": True})
    if db.get_bind().dialect.name == "postgresql":
        prefix, params = "EXPLAIN ", compiled.params
    else:  # qmark parameters, in order
        prefix, params = "EXPLAIN QUERY PLAN ", tuple(compiled.params[k] for k in compiled.positiontup)
    return "\n".join(str(r[-1]) for r in db.connection().exec_driver_sql(
        prefix + str(compiled), params))


def test_a_two_character_term_is_answered_by_an_index(db, corpus):
    if db.get_bind().dialect.name == "postgresql":
        db.execute(text("ANALYZE samples"))
        db.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask whether it *can*
        plan = _plan(db, search.clause(db, "熔断"))
        db.rollback()
        assert search.PG_BIGRAM_INDEX in plan, plan
        fn = db.scalar(text(f"SELECT {search.PG_BIGRAMS}('ab熔断器。데이터 𠀀𠀁x設定')"))
        assert fn == ["熔断", "断器", "데이", "이터", "𠀀𠀁", "設定"]
    else:
        plan = _plan(db, search.clause(db, "熔断"))
        assert search.FTS_TABLE in plan and search.SQLITE_TAIL_INDEX in plan, plan
        assert not re.search(r"SCAN samples(?!_)", plan), plan  # no scan of the table
