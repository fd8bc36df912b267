"""Text search over what the messages say: Unicode-aware, indexed, never matching JSON.

Every sample carries ``search_text``: the text of its messages (system prompt included), each
folded by :func:`fold` (NFKC, case folded, runs of whitespace as one space), one message a
line. It is written with the messages, by the code that writes them
(``service/samples/store.py``: the ORM backstop on insert and on every change of ``messages``,
and ``update_sample``'s compare-and-set), so it is never out of date and holds no keys, roles,
quotes or ``\\uXXXX`` escapes. A query is folded the same way and matched as a substring of
one message: a word, part of a word, a phrase, Chinese with no spaces at all.

* **PostgreSQL**: ``search_text LIKE '%…%'`` answered by the GIN trigram index
  ``ix_samples_search_text`` (``pg_trgm``, ``gin_trgm_ops``). Trigrams of non-ASCII letters need
  a database whose ``LC_CTYPE`` classifies them (``C.UTF-8``, ``en_US.UTF-8``, ...; with plain
  ``C`` they are not indexed and a Chinese query reads every row: still right, only slower).
* **SQLite**: the FTS5 table ``samples_fts`` with the ``trigram`` tokenizer, an external-content
  index of ``samples.search_text`` kept by triggers (insert, update of ``search_text``, delete:
  cascades included), queried with a quoted phrase (a substring match).

Queries shorter than three characters after folding have no trigram: they are matched with
``LIKE`` over ``search_text`` (a scan of the project's samples).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any

from sqlalchemy import column, text
from sqlalchemy.orm import Session
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
    return bool(name) and (name == PG_INDEX or name == FTS_TABLE
                           or name.startswith(f"{FTS_TABLE}_"))


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def clause(db: Session, query: str) -> ColumnElement[bool] | None:
    """The WHERE condition for samples whose text contains ``query`` (None: nothing to search)."""
    needle = fold(query)
    if not needle:
        return None
    like = Sample.search_text.like(f"%{_escape_like(needle)}%", escape="\\")
    if db.get_bind().dialect.name != "sqlite" or len(needle) < MIN_INDEXED:
        return like
    phrase = '"' + needle.replace('"', '""') + '"'
    matches = (text(f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :fts_phrase")
               .bindparams(fts_phrase=phrase).columns(column("rowid")))
    return Sample.id.in_(matches)
