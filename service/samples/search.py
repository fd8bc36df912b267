"""Text search over what the messages say: Unicode-aware, indexed, never matching JSON.

Every sample carries ``search_text``: the text of its messages (system prompt included), each
folded by :func:`fold` (NFKC, case folded, runs of whitespace as one space), one message a
line. It is written with the messages, by the code that writes them
(``service/samples/store.py``: the ORM backstop on insert and on every change of ``messages``,
and ``update_sample``'s compare-and-set), so it is never out of date and holds no keys, roles,
quotes or ``\\uXXXX`` escapes. A query is folded the same way and matched as a substring of
one message: a word, part of a word, a phrase, Chinese with no spaces at all.

* **PostgreSQL**: ``search_text LIKE '%…%'`` answered by the GIN trigram index
  ``ix_samples_search_text`` (``pg_trgm``, ``gin_trgm_ops``), and for a query with a space
  ``replace(search_text, ' ', 'ǂ') LIKE '%…%'`` (the needle's spaces replaced too) answered
  by ``ix_samples_search_phrase`` on that expression (migration 0015). pg_trgm cuts text into
  words at every non-letter, so on the plain text a phrase's trigrams are its words' trigrams:
  ``model data`` matched every sample holding both words, each read from the table and
  rejected. With spaces as ``ǂ`` (U+01C2, a letter to pg_trgm, rare in text people write: a
  ``ǂ`` in a phrase query matches a space too) a line is one word and the trigrams that
  straddle a space (``lǂd``) pick out the phrase itself. A query without a space keeps the plain
  index: rechecking a candidate there is a plain LIKE, not a ``replace`` of its whole text.
  Trigrams of non-ASCII letters need a database whose ``LC_CTYPE`` classifies
  them (``C.UTF-8``, ``en_US.UTF-8``, ...; with plain ``C`` they are not indexed and a Chinese
  query reads every row: still right, only slower).
* **SQLite**: the FTS5 table ``samples_fts`` with the ``trigram`` tokenizer, an external-content
  index of ``samples.search_text`` kept by triggers (insert, update of ``search_text``, delete:
  cascades included), queried with a quoted phrase (a substring match).

Two-character terms have no trigram of their own (migration 0018):

* **PostgreSQL**: a two-character term of CJK characters (Han, kana, Hangul: scripts written
  without spaces, where two characters are a common word: ``熔断``, ``数据``) is answered by
  the GIN index ``ix_samples_search_bigrams`` on ``annotune_cjk_bigrams(search_text)``, the
  array of every pair of adjacent CJK characters of the text (an immutable SQL function, so
  the index follows every write of ``search_text`` by itself and CREATE INDEX is the
  backfill): ``annotune_cjk_bigrams(search_text) @> ARRAY['熔断']``, the plain LIKE then
  checking the few rows found. A CJK pair occurs in a text exactly when it is one of those
  pairs, so nothing is lost.
* **SQLite**: any two-character term is answered by the FTS5 trigram index itself: every
  occurrence but one at the very end of the text starts a trigram (``熔断`` + the next
  character), so the trigrams that begin with the term are looked up in the index's own
  vocabulary (``samples_fts_vocab``, an ``fts5vocab`` table: a range scan of the terms) and
  matched as ``"熔断器" OR "熔断。" OR ...``; a term ending the text is found by the index
  ``ix_samples_search_tail`` on ``substr(search_text, -2)``.

Other terms shorter than three characters (one character; two on PostgreSQL that are not
both CJK, such as ``db``) are matched with ``LIKE`` over ``search_text``: a scan of the
project's samples, answered quickly by the bounded walk below when they are common.

A phrase (a query with a space) on PostgreSQL is narrowed by the phrase index with only the
trigrams that narrow it, then checked exactly (``strpos(search_text, phrase) > 0``) on the
candidates (:func:`phrase_pattern`). Indexing every trigram of ``lease on the primary
replica`` made the index scan itself the cost: the trigrams of its short common words (``the``,
``ǂth``, ``onǂ``: in more than half of all samples) have posting lists of that size, and they
narrow nothing the rare ones do not. Which trigrams are rare is read from the planner's own
sample of the column (``pg_stats``: up to 1000 texts at the column's statistics target, cached
a few minutes per process): rarest first, a trigram is read when the candidates it removes
(in that sample) cost more to fetch than its posting list costs to read (``model data``: 3 of
its 8 trigrams, a fifth of the postings, for ~10% more candidates).

A page of a search on PostgreSQL (:func:`pg_page`) is found in two steps, because no one plan
is fast for every term: walking the list's order and filtering (fast for a common term) reads
the whole table for a rare one, or for one that only the newest samples hold; the trigram index
(fast for a rare term) fetches and sorts every match of a common one. The planner cannot tell
the two apart from statistics (they say how many samples hold a term, not where), so the walk
is bounded: the first ``probe_rows(limit)`` rows in list order are filtered; if they hold a full
page it is the answer (any later match sorts after them), else the matches come from the index
(a ``MATERIALIZED`` CTE, which no ORDER BY can turn back into a walk) and are sorted.

Listed by id ascending (the API's default), the index step does not read every match: a term
that only the newest samples hold (``kubernetes operator``: ~10k matches, none among the first
2000) read them all to keep the 50 smallest ids. The index's bitmap is read in the table's
physical order, which an append-mostly table keeps close to id order, and a scan of it stops
after the first ``limit`` matches; the largest of their ids bounds the page (at least
``limit`` matches lie at or below it, wherever the others are), and the BRIN index on id
(``ix_samples_id_brin``, migration 0020: the smallest and largest id of each range of 32
blocks) lets the second scan read the index's candidates only in blocks that can hold such an
id (a ``BitmapAnd``). A row an edit moved down the table keeps its block's range honest (its id
widens that range's summary), so the bound never loses a match; on a table whose physical
order has drifted far from id order the second scan simply reads more candidates.
Measured in bench/search.py (docs/benchmarks.md, "Search").
"""
from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Text,
    and_,
    bindparam,
    column,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement

from service.core import sanitize
from service.models import Sample

FTS_TABLE = "samples_fts"
PG_INDEX = "ix_samples_search_text"
MIN_INDEXED = 3  # characters: a trigram
_WS = re.compile(r"\s+")

# SQLite: the index and the triggers that keep it (created by migration 0011; batch-mode
# rebuilds of ``samples`` drop triggers, so a migration that rebuilds the table must run
# ``SQLITE_DDL`` again and ``SQLITE_REBUILD``)
SQLITE_DDL = (
    (f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(search_text, "
     "content='samples', content_rowid='id', tokenize='trigram')"),
    (f"CREATE TRIGGER IF NOT EXISTS samples_fts_insert AFTER INSERT ON samples BEGIN "
     f"INSERT INTO {FTS_TABLE}(rowid, search_text) VALUES (new.id, new.search_text); END"),
    (f"CREATE TRIGGER IF NOT EXISTS samples_fts_delete AFTER DELETE ON samples BEGIN "
     f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, search_text) "
     "VALUES ('delete', old.id, old.search_text); END"),
    (f"CREATE TRIGGER IF NOT EXISTS samples_fts_update AFTER UPDATE OF search_text ON samples "
     f"BEGIN INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, search_text) "
     "VALUES ('delete', old.id, old.search_text); "
     f"INSERT INTO {FTS_TABLE}(rowid, search_text) VALUES (new.id, new.search_text); END"),
)
SQLITE_REBUILD = f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')"
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS samples_fts_insert",
    "DROP TRIGGER IF EXISTS samples_fts_delete",
    "DROP TRIGGER IF EXISTS samples_fts_update",
    f"DROP TABLE IF EXISTS {FTS_TABLE}",
)
JOIN = "\u01c2"  # ǂ: the space of search_text as the phrase index sees it
PG_PHRASE_INDEX = "ix_samples_search_phrase"  # since 0015
PG_PHRASE_DDL = (
    (f"CREATE INDEX IF NOT EXISTS {PG_PHRASE_INDEX} ON samples USING gin "
     f"(replace(search_text, ' ', '{JOIN}') gin_trgm_ops)"),
    f"ALTER INDEX {PG_PHRASE_INDEX} ALTER COLUMN 1 SET STATISTICS 1000",
)
PG_ID_BRIN_INDEX = "ix_samples_id_brin"  # since 0020: pg_page's bound on id, by blocks
PG_ID_BRIN_DDL = (f"CREATE INDEX IF NOT EXISTS {PG_ID_BRIN_INDEX} ON samples USING brin (id) "
                  "WITH (pages_per_range = 32, autosummarize = on)")
PG_ID_BRIN_DROP = f"DROP INDEX IF EXISTS {PG_ID_BRIN_INDEX}"
PG_DDL = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON samples USING gin (search_text gin_trgm_ops)",
    # a finer histogram of the text: the planner's estimate of how many samples hold a term
    # decides between walking the newest samples (common terms) and the trigram index (rare
    # ones); the default 100 entries cannot tell 1% from 0.01%
    "ALTER TABLE samples ALTER COLUMN search_text SET STATISTICS 1000",
)


# Two-character terms (migration 0018). CJK: scripts written without spaces between words
# (kana, Han and its extensions, Hangul syllables); the same ranges in Python and in the
# PostgreSQL function, which is what the index holds.
CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
              (0xF900, 0xFAFF), (0x20000, 0x3134F))
_CJK_PAIR = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in CJK_RANGES) + "]{2}")


def _pg_char(cp: int) -> str:
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


_PG_CJK = "[" + "".join(f"{_pg_char(a)}-{_pg_char(b)}" for a, b in CJK_RANGES) + "]"
PG_BIGRAMS = "annotune_cjk_bigrams"
PG_BIGRAM_INDEX = "ix_samples_search_bigrams"
PG_BIGRAM_DDL = (
    # every pair of adjacent CJK characters: the runs of two or more, then each run's pairs
    (f"CREATE OR REPLACE FUNCTION {PG_BIGRAMS}(t text) RETURNS text[] LANGUAGE sql IMMUTABLE "
     f"STRICT PARALLEL SAFE AS $$ SELECT coalesce(array_agg(substr(r[1], i, 2)), '{{}}') "
     f"FROM regexp_matches(t, '{_PG_CJK}{{2,}}', 'g') AS r, "
     f"generate_series(1, length(r[1]) - 1) AS i $$"),
    f"CREATE INDEX IF NOT EXISTS {PG_BIGRAM_INDEX} ON samples USING gin ({PG_BIGRAMS}(search_text))",
)
PG_BIGRAM_DROP = (f"DROP INDEX IF EXISTS {PG_BIGRAM_INDEX}",
                  f"DROP FUNCTION IF EXISTS {PG_BIGRAMS}(text)")
FTS_VOCAB = f"{FTS_TABLE}_vocab"
SQLITE_TAIL_INDEX = "ix_samples_search_tail"
# (a batch-mode rebuild of ``samples`` loses the expression index too: run these again)
SQLITE_PAIR_DDL = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_VOCAB} USING fts5vocab({FTS_TABLE}, 'row')",
    f"CREATE INDEX IF NOT EXISTS {SQLITE_TAIL_INDEX} ON samples (substr(search_text, -2))",
)
SQLITE_PAIR_DROP = (f"DROP INDEX IF EXISTS {SQLITE_TAIL_INDEX}", f"DROP TABLE IF EXISTS {FTS_VOCAB}")
# more trigrams than this begin with a two-character term: a common one, which the list's
# LIMIT finds by walking the samples in order sooner than by OR-ing that many index terms
SQLITE_MAX_PAIR_TERMS = 2000


def fold(value: str) -> str:
    """The form text is searched in: NFKC, case folded, whitespace runs as one space, stripped
    (full-width letters match half-width ones, ``ß`` matches ``ss``, a line break a space)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return _WS.sub(" ", folded).strip()


def search_text(messages: Any) -> str:
    """What a sample's search looks at: each message's folded text, one message a line (a query
    holds no line break once folded, so it never matches across two messages)."""
    if not isinstance(messages, list):
        return ""
    return "\n".join(fold(m["content"]) for m in messages
                     if isinstance(m, dict) and isinstance(m.get("content"), str))


def is_search_object(name: str | None) -> bool:
    """Database objects this module owns outside the models (for Alembic's autogenerate)."""
    return bool(name) and (name in (PG_INDEX, PG_PHRASE_INDEX, PG_BIGRAM_INDEX,
                                    PG_ID_BRIN_INDEX, SQLITE_TAIL_INDEX) or name == FTS_TABLE
                           or name.startswith(f"{FTS_TABLE}_"))


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def clause(db: Session, query: str, target: Any = None) -> ColumnElement[bool] | None:
    """The WHERE condition for samples whose text contains ``query`` (None: nothing to search);
    ``target``: the ``search_text`` of an alias of samples (PostgreSQL only; a plain LIKE, for
    filtering rows already read, never an index condition)."""
    needle = fold(query)
    if not needle:
        return None
    if sanitize.text_problem(needle):
        # a NUL or a lone surrogate: no stored text holds one (the validation gate refuses
        # them) and neither database takes it as a value; HTTP refuses it first with a 422
        return false()
    col = Sample.search_text if target is None else target
    if db.get_bind().dialect.name == "postgresql":
        # the values as literals: psycopg prepares a statement run five times, and PostgreSQL
        # may then plan it once for any value; a generic plan cannot know that ``熔断`` is
        # rare and scanned 1M rows through the bigram function (bench/search.py: 3-6 s)
        like = col.like(_literal(f"%{_escape_like(needle)}%"), escape="\\")
        if target is not None:
            return like
        if _CJK_PAIR.fullmatch(needle):
            grams = func.annotune_cjk_bigrams(col, type_=ARRAY(Text))
            return and_(grams.contains(_literal([needle], ARRAY(Text))), like)
        if " " not in needle:
            return like
        pattern = phrase_pattern(needle, planner_sample(db))
        return and_(func.replace(col, " ", JOIN).like(_literal(pattern), escape="\\"),
                    func.strpos(col, _literal(needle)) > 0)
    like = col.like(f"%{_escape_like(needle)}%", escape="\\")
    if len(needle) == 2:
        return _sqlite_pair(db, needle, like)
    if len(needle) < MIN_INDEXED:
        return like
    phrase = '"' + needle.replace('"', '""') + '"'
    matches = (text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_phrase")
               .bindparams(fts_phrase=phrase).columns(column("rowid")))
    return Sample.id.in_(matches)


def _literal(value: Any, type_: Any = None) -> Any:
    """``value`` rendered into the statement (escaped by SQLAlchemy), not bound."""
    return bindparam(None, value, type_=type_ or Text(), literal_execute=True)


def _sqlite_pair(db: Session, needle: str, like: ColumnElement[bool]) -> ColumnElement[bool]:
    """A two-character term on SQLite: the trigrams that begin with it, from the FTS index's
    vocabulary, or the text's last two characters (the tail index); the LIKE checks each."""
    nxt = ord(needle[1]) + 1
    nxt = 0xE000 if 0xD800 <= nxt < 0xE000 else nxt
    if nxt > 0x10FFFF or any(ch.lower() != ch for ch in needle):
        # no upper bound for the range, or a character the FTS index would fold further
        return like
    terms = list(db.scalars(text(f"SELECT term FROM {FTS_VOCAB} WHERE term >= :lo AND term < :hi "
                                 f"LIMIT {SQLITE_MAX_PAIR_TERMS + 1}"),
                            {"lo": needle, "hi": needle[0] + chr(nxt)}))
    if len(terms) > SQLITE_MAX_PAIR_TERMS:
        return like
    tail = func.substr(Sample.search_text, literal_column("-2")) == needle
    if not terms:
        return and_(tail, like)
    query = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
    matches = (text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_terms")
               .bindparams(fts_terms=query).columns(column("rowid")))
    return and_(or_(Sample.id.in_(matches), tail), like)


def _word(ch: str) -> bool:
    """A character pg_trgm keeps inside a word (letters and digits; ``JOIN`` is a letter)."""
    return ch.isalnum()


@dataclass(frozen=True)
class TextSample:
    """Texts of the column, spaces replaced by ``JOIN``, and in how many of them each trigram
    occurs (counted once, so a query reads its frequencies for free)."""

    texts: tuple[str, ...] = ()
    grams: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, texts: Sequence[str]) -> TextSample:
        joined = tuple(t.replace(" ", JOIN) for t in texts)
        grams: Counter[str] = Counter()
        for t in joined:
            grams.update({t[i:i + 3] for i in range(len(t) - 2)})
        return cls(joined, grams)


# what a candidate row costs (read from the table, its text rechecked: ~7 us) against one
# posting of a trigram read from the index (~13 ns), measured on the bench (bench/search.py)
CANDIDATE_COST = 300


def phrase_pattern(needle: str, sample: TextSample) -> str:
    """The LIKE pattern over ``replace(search_text, ' ', JOIN)`` that narrows a phrase on the
    phrase index: pieces of the phrase, in its order, that hold the trigrams worth reading.

    ``sample``: :func:`planner_sample`. The phrase's trigrams are considered rarest first, and
    one is read when the candidates it removes (in the sample) cost more to fetch than its
    posting list costs to read (``CANDIDATE_COST``): a common trigram (``ǂth``, ``dat``) only
    if the sample says it narrows by that much. No sample (no statistics yet): every trigram. The pattern is a necessary condition (its pieces are disjoint parts of the
    phrase, in order); the exact check is the caller's."""
    joined = needle.replace(" ", JOIN)
    starts: dict[str, int] = {}
    for i in range(len(joined) - 2):
        if all(_word(ch) for ch in joined[i:i + 3]):
            starts.setdefault(joined[i:i + 3], i)
    if not starts:  # nothing the index can use: the whole phrase, as a plain substring
        return f"%{_escape_like(joined)}%"
    chosen = sorted(starts.values())
    if sample.texts:
        left: Sequence[str] = sample.texts
        chosen = []
        for gram in sorted(starts, key=lambda g: (sample.grams.get(g, 0), starts[g])):
            kept = [t for t in left if gram in t]
            # worth reading when the candidates it removes cost more to fetch than its
            # posting list costs to read (the rarest is always read: the index needs one)
            if chosen and (len(left) - len(kept)) * CANDIDATE_COST <= sample.grams.get(gram, 0):
                continue
            chosen.append(starts[gram])
            left = kept
        chosen.sort()
    pieces: list[list[int]] = []
    for i in chosen:
        if pieces and i < pieces[-1][1]:  # overlaps the previous piece: one piece
            pieces[-1][1] = i + 3
        else:
            pieces.append([i, i + 3])
    return "%" + "%".join(_escape_like(joined[a:b]) for a, b in pieces) + "%"


SAMPLE_SECONDS = 600.0
_sample_cache: dict[str, tuple[float, TextSample]] = {}
_sample_lock = threading.Lock()


def planner_sample(db: Session) -> TextSample:
    """The planner's sample of ``samples.search_text`` (its histogram in ``pg_stats``: up to
    1000 texts at the column's statistics target), cached per database for
    ``SAMPLE_SECONDS``: the frequencies :func:`phrase_pattern` needs, at no cost per query
    (building it: ~0.1 s a process every few minutes). Empty before the first ANALYZE. (Texts
    wider than 1 kB are left out of the statistics, so long ones are under-represented: it
    ranks trigrams, it counts nothing.)"""
    key = repr(db.get_bind().engine.url)
    now = time.monotonic()
    with _sample_lock:
        hit = _sample_cache.get(key)
    if hit and now - hit[0] < SAMPLE_SECONDS:
        return hit[1]
    bounds = db.scalar(text(
        "SELECT histogram_bounds::text::text[] FROM pg_stats WHERE schemaname = current_schema() "
        "AND tablename = 'samples' AND attname = 'search_text'"))
    sample = TextSample.of(bounds or [])
    with _sample_lock:
        _sample_cache[key] = (now, sample)
    return sample


def forget_planner_sample() -> None:
    """Drop the cached samples (after an ANALYZE that should count now: tests, benches)."""
    with _sample_lock:
        _sample_cache.clear()


def probe_rows(limit: int) -> int:
    """How many rows in list order the first step of :func:`pg_page` filters."""
    return max(2000, 40 * limit)


def pg_page(db: Session, *, where: list[Any], query: str, order: Callable[[Any], list[Any]],
            limit: int) -> list[Sample]:
    """Up to ``limit`` samples matching ``where`` whose text contains ``query``, in ``order``
    (a function of the entity: samples or an alias of it), on PostgreSQL (see the module
    docstring: a bounded walk in list order, then the trigram index)."""
    window = aliased(Sample, select(Sample).where(*where).order_by(*order(Sample))
                     .limit(probe_rows(limit)).subquery("window"))
    found, in_window = clause(db, query), clause(db, query, window.search_text)
    if found is None or in_window is None:  # nothing to search for
        return list(db.scalars(select(Sample).where(*where).order_by(*order(Sample)).limit(limit)))
    rows = list(db.scalars(select(window).where(in_window).order_by(*order(window)).limit(limit)))
    if len(rows) == limit:
        return rows
    where = [*where, found]
    if _by_id_ascending(order):
        # the first ``limit`` matches in the table's physical order (the index's bitmap is read
        # in that order; the scan stops there): the ``limit``-th smallest of their ids bounds
        # the page, whatever the order of the rest, and the BRIN index on id restricts the
        # index's candidates to the blocks that can hold an id that small
        first = (select(Sample.id).where(*where).cte("first").prefix_with("MATERIALIZED"))
        ids = list(db.scalars(select(first.c.id).limit(limit)))
        if len(ids) < limit:  # that was every match
            return list(db.scalars(select(Sample).where(Sample.id.in_(ids))
                                   .order_by(*order(Sample))))
        where.append(Sample.id <= _literal(max(ids), BigInteger()))
    # the matches' ids and sort keys only (no wide rows in the CTE), the page's ids picked from
    # them, and only then the page's rows
    hits = (select(Sample.id, Sample.updated_at, Sample.created_at).where(*where)
            .cte("hits").prefix_with("MATERIALIZED"))
    page = select(hits.c.id).order_by(*order(hits.c)).limit(limit).subquery("page")
    return list(db.scalars(select(Sample).where(Sample.id.in_(select(page.c.id)))
                           .order_by(*order(Sample))))


def _by_id_ascending(order: Callable[[Any], list[Any]]) -> bool:
    """``order`` is the list's default, id ascending (the order the BRIN index serves)."""
    keys = order(Sample)
    return (len(keys) == 1 and keys[0].element.compare(Sample.__table__.c.id)
            and keys[0].modifier is operators.asc_op)
