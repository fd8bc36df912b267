"""How a sample's messages are stored: the validation gate, the content hash and the search
text, in one place.

Writers (``service.create_sample`` and ``update_sample``, the import runner, the generation
runner, review decisions through ``update_sample``) call :func:`accept` or
:func:`message_columns` and report what the gate refuses in their own terms (a 422 naming the
field, an import report line, a failed unit with its reason). :func:`prepare` is the backstop
the ORM runs on every insert of a ``Sample`` and on every update that changes its messages
(``service/models/sample.py``): a conversation the gate refuses never reaches the database,
whichever code path tried, and ``content_hash`` and ``search_text`` always follow the messages.
"""
from __future__ import annotations

import hashlib
from typing import Any

import orjson

from service.samples import search, validation
from service.samples.formats import Message


def content_hash(messages: list[dict[str, str]]) -> str:
    return hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()


def accept(messages: Any) -> list[Message]:
    """The canonical copy of ``messages``, or :class:`validation.SampleInvalid`."""
    return validation.accept(messages)


def message_columns(messages: Any) -> dict[str, Any]:
    """``messages``, ``content_hash`` and ``search_text`` for an INSERT or UPDATE of samples
    (raises :class:`validation.SampleInvalid`)."""
    msgs = accept(messages)
    return {"messages": msgs, "content_hash": content_hash(msgs),
            "search_text": search.search_text(msgs)}


class UncheckedSample(RuntimeError):
    """A code path tried to store a conversation the gate refuses (a bug: writers check
    first and answer with the reason)."""


def prepare(sample: Any) -> None:
    """The ORM backstop (``before_insert`` / ``before_update`` with changed messages)."""
    issues = validation.gate_issues(sample.messages)
    if issues:
        first = issues[0]
        raise UncheckedSample(f"sample {getattr(sample, 'id', None)}: refused by the validation "
                              f"gate: {first.field}: {first.message} ({first.code})")
    sample.content_hash = content_hash(sample.messages)
    sample.search_text = search.search_text(sample.messages)
