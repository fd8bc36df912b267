"""Writing a version's export files: byte-for-byte reproducible, streamed, renamed into place.

Layout under ``settings.data_dir/exports/<version_id>/<format>/``:

* ``train.jsonl`` / ``validation.jsonl`` / ``test.jsonl`` (only non-empty splits): one record a
  line, as ``orjson.dumps(formats.convert_out(messages, fmt))`` gives it (keys in the order the
  writer built them, UTF-8 as is, ``\\n`` after every record). The frozen messages are stored as
  that canonical JSON text, so OpenAI lines are the stored text wrapped in ``{"messages":…}``
  (PostgreSQL joins the texts of a chunk with ``}\\n{"messages":`` itself), with no parsing on
  the way (the same bytes; a property test checks it). Format ``hf`` writes ``<split>.parquet``
  instead (OpenAI ``messages`` column, through pyarrow, the engine of the ``datasets`` library;
  optional: without pyarrow the ``hf`` format is refused).
* ``dataset_info.json``: one LLaMA-Factory entry a split, named ``<dataset>_v<N>_<split>``.
* ``README.md``: the dataset card (with a Hugging Face ``configs`` header).
* ``manifest.json``: counts, sha256 and size of every other file, filter, split, seed,
  stratification, source documents, generation templates and models, reviewers, and the
  version's ``built_at``. Nothing in any file depends on when or how often it was exported.

The files are written into a staging folder which is renamed into place when complete. The zip
(``<format>.zip`` beside the folder) is made on first download: fixed member order, fixed
1980-01-01 timestamps, fixed permissions, so it is reproducible too.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from psycopg.adapt import Loader
from psycopg.pq import Format, TransactionStatus
from sqlalchemy import Text, select, type_coerce
from sqlalchemy.orm import Session

from service.core.config import get_settings
from service.core.errors import Conflict, NotFound
from service.datasets.prefetch import prefetched
from service.datasets.schemas import SPLITS
from service.models import Dataset, DatasetExport, DatasetVersion, DatasetVersionItem
from service.samples import formats

BATCH = 5000
WRITE_BUFFER = 1 << 20
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def export_root() -> Path:
    return (get_settings().data_dir / "exports").resolve()


def export_dir(version_id: int, fmt: str) -> Path:
    return export_root() / str(int(version_id)) / fmt


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "dataset"


def data_file_name(fmt: str, split: str) -> str:
    return f"{split}.parquet" if fmt == "hf" else f"{split}.jsonl"


# --- reading frozen items -----------------------------------------------------------------------


def iter_frozen(db: Session, version_id: int, split: str, batch: int = BATCH,
                joiner: bytes = b"\n") -> Iterator[tuple[int, bytes]]:
    """Frozen messages of one split in position order, in chunks: ``(rows, text)``, the text
    the rows' canonical JSON (``CanonicalJSON``: exactly ``orjson.dumps(messages)``, checked
    when the version was built; JSON has no raw newline) joined by ``joiner``, UTF-8, with
    nothing after the last row.

    On PostgreSQL each chunk is one query for a range of ``batch`` positions whose rows the
    server joins itself (``string_agg``): one Python object a chunk, not one a row, and the
    OpenAI writer's wrapping done by the separator. The chunks are read ahead by ``READERS``
    threads on their own connections, so the index scans (position order is not the heap's
    order: one heap page read a row) run on every core while this thread writes; the chunks
    still come out in order. A version that another connection cannot see yet (not committed,
    or not ready) is read on the session's own connection, one thread ahead. Elsewhere through
    SQLAlchemy's ``yield_per``.
    """
    conn = db.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        yield from _pg_chunks(db, version_id, split, batch, joiner)
        return
    stmt = (select(type_coerce(DatasetVersionItem.messages, Text))
            .where(DatasetVersionItem.version_id == version_id, DatasetVersionItem.split == split)
            .order_by(DatasetVersionItem.position))
    result = db.execute(stmt, execution_options={"yield_per": batch, "stream_results": True})
    sep = joiner.decode()
    try:
        for rows in result.partitions():
            yield len(rows), sep.join(row[0] for row in rows).encode()
    finally:
        result.close()


READERS = 2
# the rows of one range of positions, in position order (the positions come along to prove it),
# joined by the server; the range is an index scan (a sort of a chunk would spill to disk)
_CHUNK_SQL = ("SELECT array_agg(position), string_agg(messages, %s) FROM (SELECT position, "
              "messages FROM dataset_version_items WHERE version_id = %s AND split = %s "
              "AND position >= %s AND position < %s ORDER BY position) AS chunk")


class _TextAsBytes(Loader):
    """``text`` in binary format as the UTF-8 bytes the server sent (no decoding)."""

    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)


def _read_chunks(raw: Any, version_id: int, split: str, starts: range, width: int,
                 joiner: str) -> Iterator[tuple[int, bytes]]:
    """``(rows, text)`` of the position ranges ``[lo, lo + width)`` for ``lo`` in ``starts``,
    on one psycopg connection (inside its transaction)."""
    with raw.cursor(binary=True) as cur:
        cur.adapters.register_loader("text", _TextAsBytes)
        cur.execute("SET LOCAL enable_sort = off")
        try:
            for lo in starts:
                cur.execute(_CHUNK_SQL, (joiner, version_id, split, lo, lo + width))
                positions, text = cur.fetchone()
                if positions is None:  # a gap in the positions: an empty chunk keeps the turn
                    yield 0, b""
                    continue
                if any(a >= b for a, b in itertools.pairwise(positions)):
                    raise RuntimeError("frozen items came out of position order")
                yield len(positions), text
        finally:
            if raw.info.transaction_status == TransactionStatus.INTRANS:  # not after an error
                cur.execute("SET LOCAL enable_sort TO DEFAULT")


def _pg_chunks(db: Session, version_id: int, split: str, batch: int,
               joiner: bytes) -> Iterator[tuple[int, bytes]]:
    """The chunks of one split in order, read ahead by ``READERS`` threads on their own
    connections (chunk ``k`` by reader ``k % READERS``), or by one thread on the session's
    connection when another connection would not see the version."""
    sep = joiner.decode()
    conn = db.connection()
    top = conn.exec_driver_sql(
        "SELECT max(position) FROM dataset_version_items WHERE version_id = %(v)s "
        "AND split = %(s)s", {"v": version_id, "s": split}).scalar()
    if top is None:
        return
    engine = conn.engine
    with ExitStack() as stack:
        raws = []
        for _ in range(READERS):
            other = stack.enter_context(engine.connect())
            if other.exec_driver_sql("SELECT status FROM dataset_versions WHERE id = %(v)s",
                                     {"v": version_id}).scalar() != "ready":
                raws = []
                break
            raws.append(other.connection.driver_connection)
        if not raws:  # not committed yet (or not ready): only this transaction sees the items
            raws = [conn.connection.driver_connection]
        n = len(raws)
        streams = []
        for i, raw in enumerate(raws):
            chunks = _read_chunks(raw, version_id, split, range(i * batch, top + 1, n * batch),
                                  batch, sep)
            stack.callback(chunks.close)  # after its thread stopped (callbacks run last first)
            stream = prefetched(lambda chunks=chunks: next(chunks, None), _same)
            stack.callback(stream.close)
            streams.append(stream)
        # round robin: reader i has chunks i, i + n, ...; a reader out of chunks ends the split
        while True:
            for stream in streams:
                chunk = next(stream, None)
                if chunk is None:
                    return
                if chunk[0]:
                    yield chunk


def _same(chunk: tuple[int, bytes]) -> tuple[int, bytes]:
    return chunk


# --- writers ------------------------------------------------------------------------------------


class _HashingWriter:
    """Buffered file writer that hashes what it writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO = open(path, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115 (closed by close())
        self._sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self._sha.update(data)
        self._fh.write(data)
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return {"sha256": self._sha.hexdigest(), "bytes": self.bytes}


OPENAI_HEAD = b'{"messages":'
SYSTEM_HEAD = b'[{"role":"system"'
_FIRST = b'[{"role":"'
_NEXT = b'},{"role":"'
_CONTENT = b'","content":'


def _turns(line: bytes) -> list[list[bytes]]:
    """``[role, content]`` of each message of a frozen text, the content as its JSON string.

    The text is ``[{"role":"R","content":C},...]`` as orjson writes it; ``},{"role":"`` cannot
    occur inside a JSON string (its quotes would be escaped there), so splitting on it and on
    the first ``","content":`` of each piece is exact."""
    return [piece.split(_CONTENT, 1) for piece in line[len(_FIRST):-2].split(_NEXT)]


_USER_TURN = (b'{"role":"user","content":', b'{"from":"human","value":')
_GPT_TURN = (b'{"role":"assistant","content":', b'{"from":"gpt","value":')
_SHAREGPT_HEAD = b'{"conversations":'


def sharegpt_text(text: bytes) -> tuple[bytes, bool]:
    """``orjson.dumps(formats.to_sharegpt(messages))`` of every line of ``text`` (frozen texts
    joined by newlines), joined the same way; whether one has a system. The turns are renamed by byte
    replacements over the whole text: ``{"role":"user","content":`` (and the assistant's)
    cannot occur inside a JSON string (its quotes would be escaped), nor can a newline (JSON
    escapes it), so replacing them is exact; then each line is wrapped, and a system prompt
    moved to its record's end (it ends where the first user turn begins)."""
    text = text.replace(*_USER_TURN).replace(*_GPT_TURN)
    if SYSTEM_HEAD not in text:
        return _SHAREGPT_HEAD + text.replace(b"\n", b"}\n" + _SHAREGPT_HEAD) + b"}", False
    return b"\n".join([_sharegpt_system(line) if line.startswith(SYSTEM_HEAD) else
                        _SHAREGPT_HEAD + line + b"}" for line in text.split(b"\n")]), True


_SYSTEM_CONTENT = SYSTEM_HEAD + b',"content":'
_FIRST_HUMAN = b"}," + _USER_TURN[1]


def _sharegpt_system(line: bytes) -> bytes:
    cut = line.index(_FIRST_HUMAN)
    return (_SHAREGPT_HEAD + b"[" + line[cut + 2:] + b',"system":'
            + line[len(_SYSTEM_CONTENT):cut] + b"}")


def alpaca_line(line: bytes) -> tuple[bytes, bool, bool]:
    """``orjson.dumps(formats.to_alpaca(messages))`` from the frozen text; has a system, a
    history."""
    turns = _turns(line)
    system = turns.pop(0)[1] if turns[0][0] == b"system" else None
    out = b'{"instruction":' + turns[-2][1] + b',"input":"","output":' + turns[-1][1]
    if system is not None:
        out += b',"system":' + system
    if len(turns) > 2:
        out += b',"history":[' + b",".join([b"[" + turns[i][1] + b"," + turns[i + 1][1] + b"]"
                                            for i in range(0, len(turns) - 2, 2)]) + b"]"
    return out + b"}", system is not None, len(turns) > 2


OPENAI_JOINER = b"}\n" + OPENAI_HEAD  # between two frozen texts: end a record, start the next


def joiner_for(fmt: str) -> bytes:
    """What ``iter_frozen`` puts between two frozen texts for the writer of ``fmt``."""
    return OPENAI_JOINER if fmt == "openai" else b"\n"


def _write_jsonl(path: Path, chunks: Iterator[tuple[int, bytes]], fmt: str,
                 tick: Callable[[int], None]) -> dict[str, Any]:
    """One record a line, made from the frozen text without parsing it: OpenAI records are
    ``{"messages": <text>}`` (the chunks come joined by ``}\n{"messages":``, so a chunk is
    written as it is, between a head and a tail), Alpaca and ShareGPT records are cut and
    joined from the text's JSON strings (``alpaca_line``, ``sharegpt_text``). ``chunks`` are
    ``iter_frozen``'s with ``joiner_for(fmt)``. The bytes are those of
    ``orjson.dumps(formats.convert_out(messages, fmt))`` (property-tested)."""
    out = _HashingWriter(path)
    n = 0
    has_system = has_history = False
    for k, text in chunks:
        if fmt == "openai":
            has_system = has_system or text.startswith(SYSTEM_HEAD) or (
                OPENAI_JOINER + SYSTEM_HEAD in text)
            out.write(OPENAI_HEAD)
            out.write(text)
            out.write(b"}\n")
        elif fmt == "sharegpt":
            converted, system = sharegpt_text(text)
            has_system = has_system or system
            out.write(converted + b"\n")
        elif fmt == "alpaca":
            made3 = [alpaca_line(line) for line in text.split(b"\n")]
            has_system = has_system or any(r[1] for r in made3)
            has_history = has_history or any(r[2] for r in made3)
            out.write(b"\n".join([r[0] for r in made3]) + b"\n")
        else:
            raise ValueError(f"no JSON Lines writer for {fmt!r}")
        n += k
        tick(k)
    info = out.close()
    return {**info, "records": n, "has_system": has_system, "has_history": has_history}


def _write_parquet(path: Path, chunks: Iterator[tuple[int, bytes]],
                   tick: Callable[[int], None]) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("messages", pa.list_(pa.struct([("role", pa.string()),
                                                         ("content", pa.string())])))])
    n = 0
    has_system = False
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        rows: list[dict[str, Any]] = []
        for msgs in (orjson.loads(t) for _k, text in chunks for t in text.split(b"\n")):
            record = formats.convert_out(msgs, "openai")
            has_system = has_system or record["messages"][0]["role"] == "system"
            rows.append(record)
            n += 1
            if len(rows) >= BATCH:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                tick(len(rows))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            tick(len(rows))
    return {**_hash_file(path), "records": n, "has_system": has_system, "has_history": False}


def _hash_file(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while block := fh.read(WRITE_BUFFER):
            sha.update(block)
            size += len(block)
    return {"sha256": sha.hexdigest(), "bytes": size}


def _write_bytes(path: Path, data: bytes) -> dict[str, Any]:
    out = _HashingWriter(path)
    out.write(data)
    return out.close()


def _json_bytes(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


# --- the export ---------------------------------------------------------------------------------


def write_export(db: Session, export_id: int, *, on_progress: Callable[[int], None] | None = None,
                 batch: int | None = None) -> DatasetExport:
    """Write every file of the export, then rename the folder into place and record the hashes
    (``batch``: positions a chunk, ``BATCH`` by default)."""
    batch = batch or BATCH
    export = db.get(DatasetExport, export_id)
    if export is None:
        raise NotFound("export not found", code="export_not_found")
    version = db.get(DatasetVersion, export.version_id)
    if version is None or version.status != "ready":
        raise Conflict("the version is not ready", code="version_not_ready")
    dataset = db.get(Dataset, version.dataset_id)
    fmt = export.format
    final = export_dir(version.id, fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{fmt}.staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        members = _write_all(db, staging, dataset=dataset, version=version, fmt=fmt, batch=batch,
                             on_progress=on_progress)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    zip_path = final.parent / f"{fmt}.zip"
    zip_path.unlink(missing_ok=True)  # stale from an earlier export attempt
    export.files = {"members": members, "zip": zip_name(dataset, version, fmt)}
    export.manifest_sha256 = members["manifest.json"]["sha256"]
    export.path = str(final)
    export.status = "ready"
    export.progress = 100
    export.error = None
    db.flush()
    return export


def _write_all(db: Session, folder: Path, *, dataset: Dataset, version: DatasetVersion, fmt: str,
               batch: int, on_progress: Callable[[int], None] | None) -> dict[str, dict[str, Any]]:
    total = max(1, int(version.counts.get("total", 0)))
    state = {"done": 0, "pct": -1}

    def tick(k: int) -> None:
        state["done"] += k
        pct = min(99, state["done"] * 100 // total)
        if on_progress is not None and pct != state["pct"]:
            state["pct"] = pct
            on_progress(pct)

    base = f"{slug(dataset.name)}_v{version.number}"
    files: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {}
    for split in SPLITS:
        if not version.counts.get(split):
            continue
        name = data_file_name(fmt, split)
        path = folder / name
        chunks = iter_frozen(db, version.id, split, batch, joiner_for(fmt))
        meta = (_write_parquet(path, chunks, tick) if fmt == "hf"
                else _write_jsonl(path, chunks, fmt, tick))
        entry_fmt = "openai" if fmt == "hf" else fmt
        info[f"{base}_{split}"] = formats.dataset_info_entry(
            entry_fmt, name, has_system=meta.pop("has_system"), has_history=meta.pop("has_history"))
        files[name] = {**meta, "split": split}
    files["dataset_info.json"] = _write_bytes(folder / "dataset_info.json", _json_bytes(info))
    files["README.md"] = _write_bytes(folder / "README.md",
                                      dataset_card(dataset, version, fmt, files, info).encode())
    manifest = build_manifest(dataset, version, fmt, files)
    files["manifest.json"] = _write_bytes(folder / "manifest.json", _json_bytes(manifest))
    return files


def build_manifest(dataset: Dataset, version: DatasetVersion, fmt: str,
                   files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    stats = version.stats or {}
    return {
        "generator": "annotune",
        "dataset": {"id": dataset.id, "name": dataset.name, "slug": slug(dataset.name)},
        "version": {"id": version.id, "number": version.number,
                    "built_at": version.built_at.isoformat() if version.built_at else None},
        "format": fmt,
        "counts": version.counts,
        "files": {name: dict(meta) for name, meta in files.items()},
        "filter": version.filter,
        "split": version.split,
        "seed": version.seed,
        "stratify_by": version.stratify_by,
        "reasoning": version.reasoning,
        "split_method": "sha256(f'{seed}:{sample_id}') order"
                        + (", whole documents by sha256(f'{seed}:doc:{document_id}')"
                           if version.stratify_by == "document" else
                           ", each leaf of the domain tree in the ratios"
                           if version.stratify_by == "domain_leaf" else ""),
        "source_documents": stats.get("document_ids", []),
        "generation": {"templates": stats.get("templates", {}), "models": stats.get("models", {})},
        "reviewers": stats.get("reviewers", []),
        "tokens": {"tokenizer": stats.get("tokenizer"), **(stats.get("tokens", {}).get("all") or {})},
        "leakage": {**(stats.get("leakage") or {}), "pairs": len(version.leakage or [])},
    }


def dataset_card(dataset: Dataset, version: DatasetVersion, fmt: str,
                 files: dict[str, dict[str, Any]], info: dict[str, Any]) -> str:
    stats = version.stats or {}
    data_files = [(meta["split"], name) for name, meta in files.items() if "split" in meta]
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, name in data_files:
        lines += [f"  - split: {split}", f"    path: {name}"]
    lines += ["---", "", f"# {dataset.name} — version {version.number}", ""]
    if dataset.description:
        lines += [dataset.description.strip(), ""]
    lines += [f"Format: **{fmt}**"
              + (" (Parquet, OpenAI `messages` column)" if fmt == "hf" else " (JSON Lines)")
              + f". Built {version.built_at.isoformat() if version.built_at else '-'} by annotune.",
              "", "| split | samples | file | sha256 |", "| --- | ---: | --- | --- |"]
    for split, name in data_files:
        lines.append(f"| {split} | {files[name]['records']} | `{name}` | `{files[name]['sha256']}` |")
    tok = (stats.get("tokens") or {}).get("all") or {}
    flt = orjson.dumps(version.filter, option=orjson.OPT_SORT_KEYS).decode()
    ratios = orjson.dumps(version.split, option=orjson.OPT_SORT_KEYS).decode()
    loader = "parquet" if fmt == "hf" else "json"
    files_arg = ", ".join(f'"{s}": "{n}"' for s, n in data_files)
    names = ", ".join(f"`{k}`" for k in info)
    lines += [
        "", "## Selection", "",
        f"- filter: `{flt}`",
        (f"- split ratios: `{ratios}`, seed {version.seed}, "
         f"stratified by {version.stratify_by or 'nothing'}"),
        (f"- reasoning: {'in <think> blocks before the answers' if version.reasoning == 'think' else 'omitted'}"
         f" ({(stats.get('reasoning') or {}).get('samples_with_reasoning', 0)} samples have some)"),
        f"- source documents: {stats.get('document_count', 0)}",
        f"- reviewers: {', '.join(stats.get('reviewers', [])) or '-'}",
        "", "## Statistics", "",
        (f"- tokens per sample ({stats.get('tokenizer', '-')}): min {tok.get('min')}, "
         f"mean {tok.get('mean')}, p95 {tok.get('p95')}, max {tok.get('max')}"),
        f"- user turns per sample: {stats.get('turns', {})}",
        f"- near-duplicate test/train pairs: {len(version.leakage or [])}",
        "", "## Use", "",
        ("LLaMA-Factory: copy this folder into `data/` (or point `dataset_dir` at it) and use "
         f"the dataset names {names} from `dataset_info.json`."),
        "", f"Hugging Face `datasets`: `load_dataset(\"{loader}\", data_files={{{files_arg}}})`.", "",
    ]
    return "\n".join(lines)


# --- downloads ----------------------------------------------------------------------------------


def zip_name(dataset: Dataset, version: DatasetVersion, fmt: str) -> str:
    return f"{slug(dataset.name)}_v{version.number}_{fmt}.zip"


def member_order(members: dict[str, Any]) -> list[str]:
    """Data files in split order, then dataset_info.json, README.md, manifest.json."""
    data = sorted((n for n, m in members.items() if "split" in m),
                  key=lambda n: SPLITS.index(members[n]["split"]))
    return data + [n for n in ("dataset_info.json", "README.md", "manifest.json") if n in members]


def file_path(export: DatasetExport, name: str) -> Path:
    """The path of one export file; ``name`` must be listed in the export's manifest."""
    members = (export.files or {}).get("members", {})
    if export.status != "ready" or not export.path:
        raise Conflict("the export is not ready", code="export_not_ready")
    if not NAME_RE.fullmatch(name) or name not in members:
        raise NotFound("no such file in this export", code="file_not_found")
    folder = Path(export.path).resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise NotFound("no such file in this export", code="file_not_found")
    return path


def zip_path(export: DatasetExport) -> Path:
    """The export's zip, made (once) from the files: deterministic bytes."""
    if export.status != "ready" or not export.path:
        raise Conflict("the export is not ready", code="export_not_ready")
    folder = Path(export.path).resolve()
    target = folder.parent / f"{export.format}.zip"
    if target.is_file():
        return target
    members = export.files["members"]
    tmp = folder.parent / f".{export.format}.zip.{uuid.uuid4().hex}"
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in member_order(members):
                src = folder / name
                zi = zipfile.ZipInfo(name, date_time=ZIP_DATE)
                zi.compress_type = zipfile.ZIP_DEFLATED
                zi.create_system = 3
                zi.external_attr = 0o100644 << 16
                with open(src, "rb") as fh, zf.open(zi, "w", force_zip64=members[name]["bytes"] > 2**31) as out:
                    shutil.copyfileobj(fh, out, WRITE_BUFFER)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
