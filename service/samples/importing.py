"""Streaming import: turn an uploaded file into canonical samples, one ``ImportItem`` at a time.

Files: ``.jsonl``/``.ndjson`` (line by line), ``.json`` (an array, decoded element by element),
``.csv`` (header row, then one record per row) and ``.parquet`` (record batches; needs
``pyarrow``). Nothing reads a whole file into memory except a non-seekable ``.parquet`` upload.

Each record is read as a known format (``fmt``: ``"alpaca"``, ``"sharegpt"``, ``"openai"``, or
``None``/``"auto"`` = detected from the records until one parses, then fixed for the file) or
through a field ``mapping`` for other shapes. A mapping is a small dict:

* ``user``, ``assistant`` (required): the keys holding the user and assistant texts;
* ``system`` (optional): a top-level key holding a system prompt (missing or empty = none);
* ``list_field`` (optional): a top-level key holding a list of ``{user, assistant}`` items;
* ``split_items`` (default ``True``): with ``list_field``, each item becomes its own single-turn
  sample (``source_index`` = the item's index); ``False`` makes the items one multi-turn sample;
* ``strip`` (default ``True``): strip surrounding whitespace from the texts.

Examples: ``{"list_field": "conversation", "user": "human", "assistant": "assistant"}`` for
``{"conversation": [{"human": ..., "assistant": ...}, ...]}``; ``{"user": "question",
"assistant": "answer", "system": "sys"}`` for flat records.

``ImportItem.line`` is the 1-based line (``.jsonl``, and the first line of a ``.csv`` row) or
the 1-based element/row number (``.json``, ``.parquet``). Blank lines are skipped silently.

Every conversation read goes through the validation gate (``validation.gate_issues``: the
rules every sample obeys, empty or whitespace-only turns, NUL and lone surrogates included);
a refused one is an item with an ``error`` whose ``field`` names the record's own field where
it can (``conversation[0].assistant``, ``conversations[1].value``, ``output``).
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

import orjson

from service.samples.formats import (
    FORMATS,
    FormatError,
    Message,
    detect_format,
    parse_record,
)
from service.samples.validation import Issue, gate_issues

EXTENSIONS = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
_CHUNK = 1 << 20

Row = tuple[int, Any]  # (line, record) or (line, Issue) when the record itself is unreadable


@dataclass(slots=True)
class ImportItem:
    """One sample read from a file, or the reason it could not be (``error``)."""

    line: int
    source_index: int = 0
    messages: list[Message] | None = None
    error: Issue | None = None
    raw: Any = None


@dataclass
class ImportReport:
    """Outcome of ``plan_import``: what would be stored and what was refused, with reasons."""

    mode: Literal["strict", "skip"]
    accepted: list[ImportItem] = field(default_factory=list)
    rejected: list[ImportItem] = field(default_factory=list)
    valid: int = 0  # items that parsed, accepted or not

    @property
    def ok(self) -> bool:
        return not self.rejected

    @property
    def bad_lines(self) -> list[int]:
        return sorted({item.line for item in self.rejected})

    def errors(self) -> list[dict[str, Any]]:
        """``[{line, source_index, code, message, field}]`` for every rejected item."""
        return [
            {"line": i.line, "source_index": i.source_index, **i.error.as_dict()}
            for i in self.rejected
            if i.error
        ]


@dataclass(frozen=True, slots=True)
class FieldMapping:
    user: str
    assistant: str
    system: str | None = None
    list_field: str | None = None
    split_items: bool = True
    strip: bool = True


def parse_mapping(spec: dict[str, Any]) -> FieldMapping:
    """Check a mapping dict (see the module docstring); raises ``FormatError`` (invalid_mapping)."""
    if not isinstance(spec, dict):
        raise FormatError("invalid_mapping", "a mapping must be an object")
    unknown = sorted(set(spec) - set(FieldMapping.__dataclass_fields__))
    if unknown:
        raise FormatError("invalid_mapping", f"unknown mapping keys {unknown}")
    for key in ("user", "assistant"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise FormatError("invalid_mapping", f"mapping needs {key!r}: the name of a field", key)
    for key in ("system", "list_field"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise FormatError("invalid_mapping", f"{key!r} must be a field name or null", key)
    for key in ("split_items", "strip"):
        if key in spec and not isinstance(spec[key], bool):
            raise FormatError("invalid_mapping", f"{key!r} must be true or false", key)
    return FieldMapping(**spec)


def iter_records(
    fileobj: BinaryIO,
    filename: str,
    *,
    fmt: str | None = None,
    mapping: dict[str, Any] | None = None,
) -> Iterator[ImportItem]:
    """Stream the samples of an uploaded file (binary file object); see the module docstring.

    Bad arguments (unknown extension, format or mapping) raise ``FormatError`` here, before any
    reading; problems in the file become items with an ``error``.
    """
    rows = _row_reader(filename)
    if mapping is not None:
        if fmt not in (None, "auto"):
            raise FormatError(
                "invalid_mapping", "give either a format or a field mapping, not both"
            )
        to_items: Callable[[int, Any], Iterator[ImportItem]] = _MappingReader(
            parse_mapping(mapping)
        )
    else:
        to_items = _FormatReader(fmt)
    return _items(rows(fileobj), to_items)


def plan_import(
    items: Iterable[ImportItem], mode: Literal["strict", "skip"] = "strict"
) -> ImportReport:
    """Sort items into accepted and rejected.

    ``strict``: any error rejects the whole file; ``accepted`` is empty and ``rejected`` lists
    every bad item. ``skip``: every valid item is accepted; ``rejected`` lists each skipped one.
    """
    if mode not in ("strict", "skip"):
        raise ValueError(f"mode must be 'strict' or 'skip', not {mode!r}")
    report = ImportReport(mode)
    for item in items:
        if item.error is not None:
            report.rejected.append(item)
            continue
        report.valid += 1
        if mode == "skip" or not report.rejected:
            report.accepted.append(item)
    if mode == "strict" and report.rejected:
        report.accepted.clear()
    return report


def _items(
    rows: Iterator[Row], to_items: Callable[[int, Any], Iterator[ImportItem]]
) -> Iterator[ImportItem]:
    for line, record in rows:
        if isinstance(record, Issue):
            yield ImportItem(line, error=record)
        else:
            yield from to_items(line, record)


_MESSAGE_FIELD = re.compile(r"^messages\[(\d+)\]\.(content|role)$")


def _gated(line: int, index: int, messages: list[Message], sources: list[tuple[str, str]],
           raw: Any) -> ImportItem:
    """The item if the gate lets ``messages`` through, else its first issue, named by the
    record's own field: ``sources[i]`` is (content field, role field) of message ``i``."""
    issues = gate_issues(messages)
    if not issues:
        return ImportItem(line, index, messages=[{"role": m["role"], "content": m["content"]}
                                                 for m in messages], raw=raw)
    issue = issues[0]
    match = _MESSAGE_FIELD.match(issue.field or "")
    if match and int(match.group(1)) < len(sources):
        where = sources[int(match.group(1))][0 if match.group(2) == "content" else 1]
        issue = Issue(issue.code, f"{where}: {issue.message}", where)
    elif issue.field:
        issue = Issue(issue.code, f"{issue.field}: {issue.message}", issue.field)
    return ImportItem(line, index, error=issue, raw=raw)


def _format_sources(fmt: str, record: Any, n: int) -> list[tuple[str, str]]:
    """Where each canonical message of a ``fmt`` record came from: (content, role) fields."""
    if fmt == "openai":
        return [(f"messages[{i}].content", f"messages[{i}].role") for i in range(n)]
    has_system = isinstance(record, dict) and record.get("system") not in (None, "")
    out = [("system", "system")] if has_system else []
    if fmt == "sharegpt":
        out += [(f"conversations[{j}].value", f"conversations[{j}].from")
                for j in range(n - len(out))]
        return out
    history = record.get("history") if isinstance(record, dict) else None
    for k in range(len(history) if isinstance(history, list) else 0):
        out += [(f"history[{k}][0]", "history"), (f"history[{k}][1]", "history")]
    return out + [("instruction", "instruction"), ("output", "output")]


# --- records into samples -----------------------------------------------------------------


class _FormatReader:
    """Reads records of one format; with ``auto``, detects it until a record parses."""

    def __init__(self, fmt: str | None) -> None:
        if fmt not in (None, "auto", *FORMATS):
            raise FormatError(
                "unknown_format", f"unknown format {fmt!r}; expected auto or one of {FORMATS}"
            )
        self.fmt = None if fmt == "auto" else fmt

    def __call__(self, line: int, record: Any) -> Iterator[ImportItem]:
        fmt = self.fmt or detect_format(record)
        if fmt is None:
            issue = Issue(
                "unknown_format",
                "record is not alpaca, sharegpt or openai; give a format or a field mapping",
            )
            yield ImportItem(line, error=issue, raw=record)
            return
        try:
            messages = parse_record(record, fmt, check=False)
        except FormatError as exc:
            yield ImportItem(line, error=Issue.from_error(exc), raw=record)
            return
        item = _gated(line, 0, messages, _format_sources(fmt, record, len(messages)), record)
        if item.error is None:
            self.fmt = fmt
        yield item


class _MappingReader:
    def __init__(self, mapping: FieldMapping) -> None:
        self.m = mapping

    def __call__(self, line: int, record: Any) -> Iterator[ImportItem]:
        try:
            system = self._system(record)
            groups = self._groups(record)
        except FormatError as exc:
            yield ImportItem(line, error=Issue.from_error(exc), raw=record)
            return
        for index, pairs in enumerate(groups):
            yield self._item(line, index, system, pairs, record)

    def _groups(self, record: dict[str, Any]) -> list[list[tuple[Any, str | None]]]:
        """The (object, path) pairs that make up each sample of this record."""
        if self.m.list_field is None:
            return [[(record, None)]]
        items = record.get(self.m.list_field)
        if not isinstance(items, list) or not items:
            raise FormatError(
                "missing_messages_list", "must be a non-empty list", self.m.list_field
            )
        pairs = [(item, f"{self.m.list_field}[{i}]") for i, item in enumerate(items)]
        return [[pair] for pair in pairs] if self.m.split_items else [pairs]

    def _item(
        self,
        line: int,
        index: int,
        system: list[Message],
        pairs: list[tuple[Any, str | None]],
        raw: Any,
    ) -> ImportItem:
        try:
            messages = list(system)
            sources = [(self.m.system or "system",) * 2] if system else []
            for obj, path in pairs:
                for role, key in (("user", self.m.user), ("assistant", self.m.assistant)):
                    messages.append({"role": role, "content": self._text(obj, key, path)})
                    where = f"{path}.{key}" if path else key
                    sources.append((where, where))
        except FormatError as exc:
            return ImportItem(line, index, error=Issue.from_error(exc), raw=raw)
        return _gated(line, index, messages, sources, raw)

    def _system(self, record: Any) -> list[Message]:
        if not isinstance(record, dict):
            raise FormatError(
                "data_type", f"record must be a JSON object, not {type(record).__name__}"
            )
        if self.m.system is None or record.get(self.m.system) in (None, ""):
            return []
        return [{"role": "system", "content": self._text(record, self.m.system, None)}]

    def _text(self, obj: Any, key: str, path: str | None) -> str:
        where = f"{path}.{key}" if path else key
        if not isinstance(obj, dict):
            raise FormatError("data_type", "must be an object", path)
        value = obj.get(key)
        if value is None:
            raise FormatError("missing_field", f"missing field {key!r}", where)
        if not isinstance(value, str):
            raise FormatError("data_type", f"{key} must be a string", where)
        return value.strip() if self.m.strip else value


# --- files into records -------------------------------------------------------------------


def _row_reader(filename: str) -> Callable[[BinaryIO], Iterator[Row]]:
    ext = os.path.splitext(filename.lower())[1]
    readers = {
        ".jsonl": _jsonl_rows,
        ".ndjson": _jsonl_rows,
        ".json": _json_array_rows,
        ".csv": _csv_rows,
        ".parquet": _parquet_rows,
    }
    if ext == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise FormatError("unsupported_file", "importing .parquet needs pyarrow", "filename")
    if ext not in readers:
        raise FormatError(
            "unsupported_file",
            f"cannot import {ext or 'files without extension'}; "
            f"expected one of {', '.join(EXTENSIONS)}",
            "filename",
        )
    return readers[ext]


def _invalid_json(exc: Exception) -> Issue:
    return Issue("invalid_json", f"invalid JSON: {exc}")


def _invalid_encoding(exc: UnicodeDecodeError) -> Issue:
    return Issue("invalid_encoding", f"not UTF-8, import stopped here: {exc}")


def _jsonl_rows(fileobj: BinaryIO) -> Iterator[Row]:
    for line, raw in enumerate(fileobj, 1):
        if line == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        if not raw.strip():
            continue
        try:
            yield line, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:  # orjson refuses lone surrogates; read them so the gate names the field
                yield line, json.loads(raw)
            except ValueError:
                yield line, _invalid_json(exc)


def _json_array_rows(fileobj: BinaryIO) -> Iterator[Row]:
    """Decode a top-level JSON array element by element, reading the file in chunks."""
    text = _JsonText(fileobj)
    index = 0
    try:
        if text.next_char() != "[":
            yield 1, Issue("invalid_json", "a .json file must hold an array of records")
            return
        text.pos += 1
        while (char := text.next_char()) != "]":
            if index:
                if char != ",":
                    yield (
                        index + 1,
                        Issue("invalid_json", f"expected ',' or ']' after element {index}"),
                    )
                    return
                text.pos += 1
                text.next_char()
            record = text.decode_value()
            index += 1
            if isinstance(record, json.JSONDecodeError):
                yield index, _invalid_json(record)
                return
            yield index, record
    except UnicodeDecodeError as exc:
        yield index + 1, _invalid_encoding(exc)


class _JsonText:
    """Incrementally decoded text and a read position; reads bigger chunks for long elements."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self.fileobj = fileobj
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.chunk = _CHUNK
        self._json = json.JSONDecoder()

    def read_more(self) -> None:
        data = self.fileobj.read(self.chunk)
        self.eof = not data
        self.buf = self.buf[self.pos :] + self.decoder.decode(data, final=self.eof)
        self.pos = 0

    def next_char(self) -> str:
        """Skip whitespace; return the next character ('' at the end) without consuming it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos : self.pos + 1]
            self.read_more()

    def decode_value(self) -> Any:
        """Decode the value at ``pos``, reading ever bigger chunks while it is incomplete;
        returns the ``JSONDecodeError`` when the rest of the file cannot complete it."""
        while True:
            try:
                value, end = self._json.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:  # a number may continue in the next chunk
                    self.pos, self.chunk = end, _CHUNK
                    return value
            except json.JSONDecodeError as exc:
                if self.eof:
                    return exc
            self.chunk *= 2
            self.read_more()


def _csv_rows(fileobj: BinaryIO) -> Iterator[Row]:
    reader = csv.reader(codecs.iterdecode(fileobj, "utf-8-sig"))
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [name.strip() for name in row]
            elif len(row) != len(header):
                yield (
                    line,
                    Issue("csv_columns", f"row has {len(row)} cells, the header has {len(header)}"),
                )
            else:
                yield line, dict(zip(header, row, strict=True))
    except UnicodeDecodeError as exc:
        yield start, _invalid_encoding(exc)
    except csv.Error as exc:
        yield start, Issue("invalid_csv", f"unreadable CSV, import stopped here: {exc}")


def _parquet_rows(fileobj: BinaryIO) -> Iterator[Row]:
    import pyarrow.parquet as pq

    if not fileobj.seekable():
        fileobj = io.BytesIO(fileobj.read())
    line = 0
    for batch in pq.ParquetFile(fileobj).iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            line += 1
            yield line, record
