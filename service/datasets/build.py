"""Pass 3 of a version build (freeze), in batches: what ``service.build_version`` runs once the
samples are selected and split.

The pass used to do everything per sample in Python (the row through the ORM, the gate, one
regex ``findall`` per message, the COPY row by row) and then read all test and train items
back for the leakage check. Now, per batch of ``batch`` samples:

* the rows come through a server-side cursor, fetched a batch ahead in a thread
  (``prefetch``): PostgreSQL's scan, JSONB rendering and latest-revision lookups overlap with
  the work below. JSON columns arrive as text; tags and provenance are counted per distinct
  text and parsed once each at the end;
* a sample whose messages are plainly canonical (``_plain``) skips the full gate; anything
  else goes through ``freeze.frozen_messages``, so the gate refuses exactly what it did;
* token counts (``tokencount.simple_counts``) and the leakage signatures
  (``leakage.Collector``) are array operations over the whole batch;
* the items go to PostgreSQL as one COPY text block a batch (``executemany`` elsewhere).

The leakage check needs no second read: test signatures stay in memory (256 bytes a sample),
train signatures go to a temporary file and are matched against the test index at the end.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Text, cast, func, insert, select
from sqlalchemy.orm import Session

from service.core.db import utcnow
from service.datasets import leakage, tokencount
from service.datasets.freeze import REFUSED_LISTED, Unexportable, frozen_messages
from service.datasets.prefetch import prefetched
from service.datasets.schemas import SPLITS
from service.models import DatasetVersion, DatasetVersionItem, Sample, SampleRevision, User
from service.samples import tokens
from service.samples.store import content_hash  # noqa: F401  (the one hash of a conversation)

log = logging.getLogger(__name__)
TOP_N = 100
ITEM_COLUMNS = ("version_id", "sample_id", "revision_id", "sample_version", "split", "position",
                "messages", "content_hash", "document_id")
_SORTED = orjson.OPT_SORT_KEYS
#: blocks (a batch's items each) per COPY statement; the queue holds a few more than the pause
#: at each statement's end lasts
COPY_BLOCKS = 16
_TURN_ROLES = ("user", "assistant")


def with_think(messages: list[dict[str, str]], reasoning: str) -> list[dict[str, str]]:
    """The conversation with ``reasoning`` before the answer of its last assistant turn, in the
    ``<think>`` block reasoning chat templates (Qwen3, DeepSeek-R1; LLaMA-Factory's
    ``enable_thinking``) train on."""
    out = [dict(m) for m in messages]
    last = max(i for i, m in enumerate(out) if m["role"] == "assistant")
    out[last]["content"] = f"<think>\n{reasoning.strip()}\n</think>\n\n{out[last]['content']}"
    return out


def _plain(messages: Any) -> list[dict[str, str]] | None:
    """The frozen copy of a conversation that certainly passes the gate, else None (then the
    full gate decides). Sufficient, not necessary: exactly ``role`` and ``content`` strings,
    an optional system message first, then user/assistant pairs, no blank turn. The caller
    takes this path only for JSON text without ``\\u`` escapes, so no NUL or lone surrogate
    can be in it (PostgreSQL renders other characters as UTF-8)."""
    if type(messages) is not list or not messages:
        return None
    out = []
    expected = 0
    for i, m in enumerate(messages):
        if type(m) is not dict or len(m) != 2:
            return None
        role, content = m.get("role"), m.get("content")
        if type(content) is not str or not content.strip():
            return None
        if role == "system" and i == 0:
            pass
        elif role != _TURN_ROLES[expected]:
            return None
        else:
            expected ^= 1
        out.append({"role": role, "content": content})
    return out if expected == 0 and len(out) > (out[0]["role"] == "system") else None


class _Sink:
    """Where the items go: one ``COPY ... FROM STDIN`` for the whole pass on PostgreSQL, fed by
    a thread of its own (a bounded queue of text blocks, ``depth`` ahead), so that the server's
    insert and index work overlaps with the next batch here; ``executemany`` elsewhere.
    ``db`` is not used for anything else until ``close``. With ``shared`` (the samples are read
    through ``db`` itself, whose connection an open COPY would block) each batch is a COPY of its
    own, written in this thread."""

    def __init__(self, db: Session, *, shared: bool, depth: int = 6) -> None:
        conn = db.connection()
        self.copy = conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"
        self._db, self._shared = db, shared
        self._error: BaseException | None = None
        self._sql = f"COPY dataset_version_items ({', '.join(ITEM_COLUMNS)}) FROM STDIN"
        if self.copy and not shared:
            self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name="build-copy", daemon=True,
                                            args=(conn.connection.driver_connection,))
            self._thread.start()

    def _run(self, raw: Any) -> None:
        ended = False  # the caller's last word (None: finish, _ABORT: cancel) was read
        try:
            with raw.cursor() as cur:
                while not ended:
                    # a COPY statement per COPY_BLOCKS blocks: PostgreSQL checks each row's
                    # foreign key (its version) at the end of the statement, so the checks
                    # run along the build instead of all after it (5 s at 900k)
                    with cur.copy(self._sql) as cp:
                        for _ in range(COPY_BLOCKS):
                            block = self._queue.get()
                            if block is None or block is _ABORT:
                                ended = True
                                if block is _ABORT:
                                    raise _Aborted
                                break
                            cp.write(block)
        except _Aborted:
            pass  # the caller cancelled it and is joining: nothing more comes
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self._error = exc
            # let the caller finish its puts, up to its last word (unless already read:
            # waiting for another one would hang the build, and its join, for ever)
            while not ended and self._queue.get() not in (None, _ABORT):
                pass

    def write_copy(self, lines: list[bytes]) -> None:
        if self._error is not None:
            raise self._error
        lines.append(b"")
        if self._shared:
            raw = self._db.connection().connection.driver_connection
            with raw.cursor() as cur, cur.copy(self._sql) as cp:
                cp.write(b"\n".join(lines))
        else:
            self._queue.put(b"\n".join(lines))

    def write_block(self, block: bytes, stop: threading.Event) -> None:
        """A block of COPY lines (each ending in a newline) from another thread, e.g. a
        shard's reader; gives up once ``stop`` is set (the pass is being aborted)."""
        while not stop.is_set():
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(block, timeout=0.2)
                return
            except queue.Full:
                continue

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        self._db.execute(insert(DatasetVersionItem), rows)

    def close(self, ok: bool) -> None:
        """End the COPY (waiting for the server) or, with ``ok`` false, abort it."""
        if not self.copy or self._shared:
            return
        self._queue.put(None if ok else _ABORT)
        self._thread.join()
        if ok and self._error is not None:
            raise self._error


_ABORT: Any = object()


class _Aborted(Exception):
    """The pass failed: the COPY is cancelled (and the transaction rolled back by the caller)."""


def _null(v: int | None) -> bytes:
    return b"\\N" if v is None else b"%d" % v


def _rows(read: Session, stmt: Any, batch: int, *, ahead: bool) -> Iterator[list[Any]]:
    """Batches of rows through a server-side cursor; with ``ahead``, fetched in a thread
    (only where ``read`` is a connection of its own, not the one the items are written to)."""
    result = read.connection().execute(stmt.execution_options(stream_results=True,
                                                              yield_per=batch))
    try:
        if ahead:
            yield from prefetched(lambda: result.fetchmany(batch), list)
        else:
            yield from result.partitions(batch)
    finally:
        result.close()


class _Stats:
    """What the pass accumulates besides the items; distinct JSON texts counted, parsed last."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(SPLITS, 0)
        self.tokens: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        self.turns: Counter[int] = Counter()
        self.tag_texts: Counter[Any] = Counter()
        self.prov_texts: Counter[Any] = Counter()
        self.documents: Counter[int] = Counter()
        self.reviewer_ids: set[int] = set()
        self.with_reasoning = 0
        self.refused: list[dict[str, Any]] = []
        self.refused_total = 0

    def merge(self, other: _Stats) -> None:
        """Add ``other``'s (a later id range's: refused samples stay in id order)."""
        for s in SPLITS:
            self.counts[s] += other.counts[s]
            self.tokens[s].extend(other.tokens[s])
        self.turns.update(other.turns)
        self.tag_texts.update(other.tag_texts)
        self.prov_texts.update(other.prov_texts)
        self.documents.update(other.documents)
        self.reviewer_ids |= other.reviewer_ids
        self.with_reasoning += other.with_reasoning
        self.refused = (self.refused + other.refused)[:REFUSED_LISTED]
        self.refused_total += other.refused_total

    def tags(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for text, k in self.tag_texts.items():
            for tag in (orjson.loads(text) if text else None) or ():
                out[tag] += k
        return out

    def labels(self) -> tuple[Counter[str], Counter[str]]:
        templates: Counter[str] = Counter()
        models: Counter[str] = Counter()
        for text, k in self.prov_texts.items():
            prov = orjson.loads(text) if text else None
            if prov:
                found_t, found_m = provenance_labels(prov)
                for label in found_t:
                    templates[label] += k
                for label in found_m:
                    models[label] += k
        return templates, models


@dataclass
class Pass:
    """One freeze loop's inputs: the selected samples (``ids`` ascending, their split codes and
    positions) read by ``stmt`` through ``read``, written to ``sink``."""

    read: Session
    stmt: Any
    batch: int
    version_id: int
    think: bool
    ids: np.ndarray
    codes: np.ndarray
    positions: np.ndarray
    sink: Any  # _Sink, or a shard's pipe (``copy`` true, ``write_copy``)
    collector: leakage.Collector
    st: _Stats
    tok: tokens.Tokenizer
    on_progress: Callable[[int, int], None] | None
    ahead: bool  # fetch a batch ahead in a thread (``read`` is not the connection written to)

    def part(self, lo: int, hi: int, **changes: Any) -> Pass:
        """This pass over ``ids[lo:hi]`` only (the rows read for that id range)."""
        return replace(self, ids=self.ids[lo:hi], codes=self.codes[lo:hi],
                       positions=self.positions[lo:hi], **changes)


def rows_statement(filtered: Callable[[Any], Any], ids: np.ndarray) -> Any:
    """The rows a freeze loop reads for ``ids`` (ascending): the filter's, in that id range."""
    latest_rev = (select(func.max(SampleRevision.id))
                  .where(SampleRevision.sample_id == Sample.id).correlate(Sample).scalar_subquery())
    stmt = filtered(select(Sample.id, Sample.version, cast(Sample.messages, Text),
                           Sample.document_id, cast(Sample.tags, Text),
                           cast(Sample.provenance, Text), Sample.reviewed_by_id, latest_rev,
                           Sample.reasoning))
    if len(ids):
        stmt = stmt.where(Sample.id >= int(ids[0]), Sample.id <= int(ids[-1]))
    return stmt


def freeze(db: Session, read: Session, version: DatasetVersion, filtered: Callable[[Any], Any],
           ids: np.ndarray, codes: np.ndarray, positions: np.ndarray, *, batch: int,
           leakage_max: int, on_progress: Callable[[int, int], None] | None,
           shards: int = 1) -> DatasetVersion:
    """Freeze the selected samples (``ids`` ascending, with their split codes and positions)
    into items, then record counts, stats and the leakage report on ``version``.

    With ``shards`` > 1 (PostgreSQL, ``read`` a REPEATABLE READ session of its own) the last
    ``shards - 1`` parts of the ids are frozen by child processes (``datasets.shard``) reading
    in ``read``'s snapshot, their items written by this process's COPY: the per-sample Python
    runs on every core, the transaction stays one."""
    started = time.perf_counter()
    tok = tokens.get_tokenizer()
    n = len(ids)
    planned = {s: int((codes == i).sum()) for i, s in enumerate(SPLITS)}
    collector = leakage.Collector(planned, max_samples=leakage_max)
    st = _Stats()
    if on_progress is not None:
        on_progress(0, n)
    sink = _Sink(db, shared=read is db)
    whole = Pass(read, None, batch, version.id, version.reasoning == "think", ids, codes,
                 positions, sink, collector, st, tok, on_progress, ahead=read is not db)
    children: list[Any] = []
    try:
        bounds = _shard_bounds(n, shards if _snapshot_shared(db, read, sink) else 1)
        if len(bounds) > 2:
            from service.datasets import shard

            children = [shard.start(whole.part(lo, hi), version, planned, leakage_max)
                        for lo, hi in itertools.pairwise(bounds[1:])]
        report = _counting(on_progress, children, n)
        _freeze_rows(whole.part(0, bounds[1], stmt=rows_statement(filtered, ids[:bounds[1]]),
                                on_progress=report))
        for child in children:
            st.merge(child.wait(report))
    except BaseException:
        for child in children:
            child.stop()
        sink.close(ok=False)
        raise
    frozen = time.perf_counter()
    sink.close(ok=not st.refused_total)
    if st.refused_total:
        raise Unexportable(st.refused, st.refused_total)
    copied = time.perf_counter()
    _record(db, version, st, tok.name, collector)
    log.info("version %s: %d samples frozen in %.1f s (%d processes), COPY ended in %.1f s, "
             "leakage and statistics in %.1f s", version.id, n, frozen - started,
             len(children) + 1, copied - frozen, time.perf_counter() - copied)
    return version


def _snapshot_shared(db: Session, read: Session, sink: _Sink) -> bool:
    """Whether child processes can read what ``read`` reads: its snapshot is the whole
    transaction's (REPEATABLE READ or stricter, on PostgreSQL) and the items go to a COPY."""
    if not sink.copy or read is db:
        return False
    return read.connection().get_isolation_level() in ("REPEATABLE READ", "SERIALIZABLE")


def _shard_bounds(n: int, shards: int) -> list[int]:
    """Where each part of ``n`` ids starts (and the end): ``shards`` parts, ~equal."""
    shards = max(1, min(shards, n))
    return [n * k // shards for k in range(shards + 1)] if n else [0, 0]


def _counting(on_progress: Callable[[int, int], None] | None, children: list[Any], n: int
              ) -> Callable[[int | None, int], None] | None:
    """Progress of the whole build: this process's samples (the last count its loop gave;
    a child's ``wait`` calls it with ``None``) plus its children's."""
    if on_progress is None:
        return None
    own = [0]

    def report(done: int | None, _total: int) -> None:
        if done is not None:
            own[0] = done
        on_progress(own[0] + sum(c.done for c in children), n)

    return report


def _freeze_rows(p: Pass) -> None:
    """The loop of ``freeze``, with a thread for each batch's array work (``_numbers``)."""
    with ThreadPoolExecutor(1, thread_name_prefix="build-arrays") as pool:
        _loop(p, pool)


def _loop(p: Pass, pool: ThreadPoolExecutor) -> None:
    """Per batch, per sample only what needs Python."""
    st, collector, sink, ids, codes, positions = (p.st, p.collector, p.sink, p.ids, p.codes,
                                                  p.positions)
    version_id, think = p.version_id, p.think
    loads, dumps, sha256 = orjson.loads, orjson.dumps, hashlib.sha256
    raw_text = leakage.raw_text
    split_names = [s.encode() for s in SPLITS]
    n, done = len(ids), 0
    pending: Future[None] | None = None
    for rows in _rows(p.read, p.stmt, p.batch, ahead=p.ahead):
        sids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        at = np.minimum(np.searchsorted(ids, sids), max(n - 1, 0))
        chosen = np.flatnonzero(ids[at] == sids) if n else np.zeros(0, dtype=np.int64)
        lines: list[bytes] = []
        dicts: list[dict[str, Any]] = []
        token_texts: list[str] = []
        splits: list[int] = []
        pending_split = collector.pending()
        for i, code, position in zip(chosen.tolist(), codes[at[chosen]].tolist(),
                                     positions[at[chosen]].tolist(), strict=True):
            sid, sversion, mtext, doc_id, tags_text, prov_text, reviewer, rev_id, reasoning = rows[i]
            parsed = loads(mtext)
            messages = _plain(parsed) if "\\u" not in mtext else None
            if messages is None:
                messages, issue = frozen_messages(parsed)
                if issue is not None:
                    st.refused_total += 1
                    if len(st.refused) < REFUSED_LISTED:
                        st.refused.append({"sample_id": sid, "code": issue.code,
                                           "field": issue.field, "message": issue.message})
                    continue
            if think and reasoning and reasoning.strip():
                messages = with_think(messages, reasoning)
                st.with_reasoning += 1
            digest = sha256(dumps(messages, option=_SORTED)).hexdigest()
            if sink.copy:
                # COPY text: the JSON holds no tab or newline (JSON escapes them), only
                # backslashes, which COPY reads as escapes: doubled
                lines.append(b"%d\t%d\t%b\t%d\t%b\t%d\t%b\t%b\t%b" % (
                    version_id, sid, _null(rev_id), sversion, split_names[code], position,
                    dumps(messages).replace(b"\\", b"\\\\"), digest.encode(), _null(doc_id)))
            else:
                dicts.append(dict(zip(ITEM_COLUMNS, (
                    version_id, sid, rev_id, sversion, SPLITS[code], position, messages,
                    digest, doc_id), strict=True)))
            splits.append(code)
            token_texts.append("\n".join([m["content"] for m in messages]))
            into = pending_split[code]
            if into is not None:
                into[0].append(sid)
                into[1].append(raw_text(messages))
            st.turns[[m["role"] for m in messages].count("user")] += 1
            st.tag_texts[tags_text] += 1
            if doc_id is not None:
                st.documents[doc_id] += 1
            if reviewer is not None:
                st.reviewer_ids.add(reviewer)
            if prov_text is not None:
                st.prov_texts[prov_text] += 1
        done += len(chosen)
        if st.refused_total:
            continue  # the build fails: go on only to find every refused sample
        if lines:
            sink.write_copy(lines)
        if dicts:
            sink.write_rows(dicts)
        if pending is not None:
            pending.result()  # one batch of array work in flight at most
        pending = pool.submit(_numbers, st, collector, collector.take(), token_texts, splits,
                              p.tok)
        if p.on_progress is not None:
            p.on_progress(done, n)
    if pending is not None:
        pending.result()


def _numbers(st: _Stats, collector: leakage.Collector,
             taken: dict[str, tuple[list[int], list[str]]], token_texts: list[str],
             splits: list[int], tok: tokens.Tokenizer) -> None:
    """A batch's array work, in the pool's thread while the next batch is read and checked
    (numpy releases the GIL): token counts and leakage signatures."""
    if splits:
        counts = (tokencount.simple_counts(token_texts)
                  if isinstance(tok, tokens.SimpleTokenizer) else
                  np.array([tok.count(t) for t in token_texts], dtype=np.int64))
        split_codes = np.array(splits, dtype=np.int8)
        for c, s in enumerate(SPLITS):
            mine = counts[split_codes == c]
            st.counts[s] += len(mine)
            st.tokens[s].append(mine)
    collector.absorb(taken)


def _record(db: Session, version: DatasetVersion, st: _Stats, tokenizer: str,
            collector: leakage.Collector) -> None:
    reviewers = sorted(db.scalars(select(User.email).where(User.id.in_(st.reviewer_ids)))) \
        if st.reviewer_ids else []
    per_split = {s: np.concatenate(st.tokens[s]) if st.tokens[s] else np.zeros(0, dtype=np.int64)
                 for s in SPLITS}
    all_tokens = np.concatenate(list(per_split.values()))
    tags = st.tags()
    templates, models = st.labels()
    counts = st.counts
    stats: dict[str, Any] = {
        "tokenizer": tokenizer,
        "tokens": {"all": summary(all_tokens), "histogram": histogram(all_tokens),
                   **{s: summary(per_split[s]) for s in SPLITS}},
        "turns": {str(k): v for k, v in sorted(st.turns.items())},
        "tags": dict(sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_N]),
        "tag_count": len(tags),
        "documents": {str(k): v for k, v in sorted(st.documents.items(),
                                                   key=lambda kv: (-kv[1], kv[0]))[:TOP_N]},
        "document_count": len(st.documents),
        "document_ids": sorted(st.documents),
        "templates": dict(sorted(templates.items())),
        "models": dict(sorted(models.items())),
        "reviewers": reviewers,
        "reasoning": {"mode": version.reasoning, "samples_with_reasoning": st.with_reasoning},
    }
    report, leak_info = collector.finish(counts)
    stats["leakage"] = leak_info
    version.counts = {**counts, "total": sum(counts.values())}
    version.stats = stats
    version.leakage = report
    version.status = "ready"
    version.error = None
    version.built_at = utcnow()
    db.flush()


# --- statistics -------------------------------------------------------------------------------

_TEMPLATE_KEYS = ("template", "template_name", "prompt_template", "template_version",
                  "prompt_template_id", "template_id")
_MODEL_KEYS = ("model", "model_name")


def provenance_labels(prov: Any) -> tuple[list[str], list[str]]:
    """Generation templates and models named in a sample's provenance."""
    if not isinstance(prov, dict):
        return [], []
    found: dict[str, list[str]] = {"t": [], "m": []}
    scopes = [prov] + [v for v in prov.values() if isinstance(v, dict)]
    for scope in scopes:
        for kind, keys in (("t", _TEMPLATE_KEYS), ("m", _MODEL_KEYS)):
            for key in keys:
                value = scope.get(key)
                if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                    found[kind].append(f"{key}={value}" if kind == "t" else str(value))
                elif isinstance(value, dict) and kind == "t":
                    name, ver = value.get("name"), value.get("version")
                    if name is not None:
                        found["t"].append(f"{name}@{ver}" if ver is not None else str(name))
    return found["t"], found["m"]


def histogram(values: np.ndarray) -> list[dict[str, int]]:
    """Counts in power-of-two buckets: [0,16), [16,32), [32,64), ..."""
    if values.size == 0:
        return []
    edges = [0, 16]
    top = int(values.max())
    while edges[-1] <= top:
        edges.append(edges[-1] * 2)
    counts, _ = np.histogram(values, bins=edges)
    return [{"lo": edges[i], "hi": edges[i + 1], "count": int(c)} for i, c in enumerate(counts)]


def summary(values: np.ndarray) -> dict[str, Any]:
    """Same definition as ``tokens.summarize`` (nearest-rank p95), computed in numpy."""
    n = int(values.size)
    if not n:
        return tokens.summarize([])
    s = np.sort(values)
    return {"min": int(s[0]), "mean": round(float(s.sum()) / n, 3),
            "p95": int(s[(95 * n + 99) // 100 - 1]), "max": int(s[-1]), "count": n}


