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

Queries shorter than three characters after folding have no trigram: they are matched with
``LIKE`` over ``search_text`` (a scan of the project's samples).

A page of a search on PostgreSQL (:func:`pg_page`) is found in two steps, because no one plan
is fast for every term: walking the list's order and filtering (fast for a common term) reads
the whole table for a rare one, or for one that only the newest samples hold; the trigram index
(fast for a rare term) fetches and sorts every match of a common one. The planner cannot tell
the two apart from statistics (they say how many samples hold a term, not where), so the walk
is bounded: the first ``probe_rows(limit)`` rows in list order are filtered; if they hold a full
page it is the answer (any later match sorts after them), else the matches come from the index
(a ``MATERIALIZED`` CTE, which no ORDER BY can turn back into a walk) and are sorted.
Measured in bench/search.py (docs/benchmarks.md, "Search").
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any

from sqlalchemy import column, func, select, text
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

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
PG_DDL = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON samples USING gin (search_text gin_trgm_ops)",
    # a finer histogram of the text: the planner's estimate of how many samples hold a term
    # decides between walking the newest samples (common terms) and the trigram index (rare
    # ones); the default 100 entries cannot tell 1% from 0.01%
    "ALTER TABLE samples ALTER COLUMN search_text SET STATISTICS 1000",
)


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
    return bool(name) and (name in (PG_INDEX, PG_PHRASE_INDEX) or name == FTS_TABLE
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
    col = Sample.search_text if target is None else target
    like = col.like(f"%{_escape_like(needle)}%", escape="\\")
    if db.get_bind().dialect.name == "postgresql":
        if " " not in needle or target is not None:
            return like
        return func.replace(col, " ", JOIN).like(
            f"%{_escape_like(needle).replace(' ', JOIN)}%", escape="\\")
    if len(needle) < MIN_INDEXED:
        return like
    phrase = '"' + needle.replace('"', '""') + '"'
    matches = (text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_phrase")
               .bindparams(fts_phrase=phrase).columns(column("rowid")))
    return Sample.id.in_(matches)


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
    # the matches' ids and sort keys only (no wide rows in the CTE), the page's ids picked from
    # them, and only then the page's rows
    hits = (select(Sample.id, Sample.updated_at, Sample.created_at).where(*where, found)
            .cte("hits").prefix_with("MATERIALIZED"))
    page = select(hits.c.id).order_by(*order(hits.c)).limit(limit).subquery("page")
    return list(db.scalars(select(Sample).where(Sample.id.in_(select(page.c.id)))
                           .order_by(*order(Sample))))
