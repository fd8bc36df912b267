"""Token counting for samples: named tokenizers, per-sample counts and their summary.

Tokenizer names:
* ``"tiktoken:<encoding>"`` e.g. ``"tiktoken:cl100k_base"``: needs the encoding file (downloaded
  once, or found under ``TIKTOKEN_CACHE_DIR``); raises ``TokenizerUnavailable`` offline.
* ``"hf:<name>"``: a local Hugging Face tokenizer that an operator listed by name in
  ``ANNOTUNE_HF_TOKENIZERS`` (``{"qwen2.5": "/models/qwen2.5"}``: a folder, or
  ``<folder>/<file>.gguf``). Never a path from the request: ``?tokenizer=hf:/etc`` is refused
  (422), so a caller can neither probe the file system nor load torch into the API. A folder with
  a ``tokenizer.json`` loads with ``tokenizers`` alone; others through
  ``transformers.AutoTokenizer`` with ``local_files_only``.
* ``"simple"``: deterministic and offline (see ``SimpleTokenizer``).

``get_tokenizer()`` with no name tries ``DEFAULT_TOKENIZER`` and falls back to ``"simple"``; an
explicit name never falls back, so a count is always labelled with the tokenizer that made it.
Counts are of message contents only (no chat-template tokens).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from service.core.errors import Invalid

DEFAULT_TOKENIZER = "tiktoken:cl100k_base"
FALLBACK_TOKENIZER = "simple"

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_SIMPLE_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")


class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class TokenizerUnavailable(RuntimeError):
    """The named tokenizer cannot be loaded here (missing package, file or network)."""


class UnknownTokenizer(ValueError, Invalid):
    """A name that is not a tokenizer name at all (a 422 through the API)."""

    def __init__(self, message: str) -> None:
        Invalid.__init__(self, message, code="unknown_tokenizer",
                         details=[{"field": "query.tokenizer", "message": message}])


class TokenizerNotAllowed(TokenizerUnavailable, Invalid):
    """An ``hf:`` name that the operator did not list (a 422 through the API)."""

    def __init__(self, message: str) -> None:
        Invalid.__init__(self, message, code="tokenizer_not_allowed",
                         details=[{"field": "query.tokenizer", "message": message}])


class SimpleTokenizer:
    """Offline approximation: each CJK character (kana, hangul too) is one token, each run of
    other word characters is one token, and each other non-space character is one token.

    ``"Hello, 世界!"`` -> ``Hello`` ``,`` ``世`` ``界`` ``!`` = 5.
    """

    name = FALLBACK_TOKENIZER

    def count(self, text: str) -> int:
        return len(_SIMPLE_TOKEN.findall(text))


class _EncodeTokenizer:
    """Adapter for anything with an ``encode(text) -> list`` function."""

    def __init__(self, name: str, encode: Callable[[str], Sequence[Any]]) -> None:
        self.name = name
        self._encode = encode

    def count(self, text: str) -> int:
        return len(self._encode(text))


def get_tokenizer(name: str | None = None) -> Tokenizer:
    """Return the tokenizer called ``name`` (cached); ``None`` means the default with fallback."""
    if name is None:
        return _default()
    kind, _, arg = name.partition(":")
    if kind == "hf" and arg:
        return _load_hf(name, _hf_path(arg))
    return _load(name)


def _hf_path(arg: str) -> str:
    from service.core.config import get_settings

    listed = get_settings().hf_tokenizers
    if arg not in listed:
        names = ", ".join(f"hf:{n}" for n in sorted(listed)) or "none are configured"
        raise TokenizerNotAllowed(
            f"hf: tokenizers are loaded by name from ANNOTUNE_HF_TOKENIZERS, never by path "
            f"({names})")
    return listed[arg]


@functools.cache
def _default() -> Tokenizer:
    """Resolved once per process: an offline tiktoken would otherwise retry the network."""
    try:
        return _load(DEFAULT_TOKENIZER)
    except TokenizerUnavailable:
        return _load(FALLBACK_TOKENIZER)


@functools.cache
def _load(name: str) -> Tokenizer:
    if name == FALLBACK_TOKENIZER:
        return SimpleTokenizer()
    kind, _, arg = name.partition(":")
    if kind == "tiktoken" and arg:
        return _load_tiktoken(name, arg)
    raise UnknownTokenizer(
        f"unknown tokenizer {name[:100]!r}: use 'simple', 'tiktoken:<encoding>' or 'hf:<name>'"
    )


def _load_tiktoken(name: str, encoding: str) -> Tokenizer:
    try:
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
    except Exception as exc:  # ImportError, no network, unknown encoding
        raise TokenizerUnavailable(f"{name}: {exc.__class__.__name__}: {exc}") from exc
    return _EncodeTokenizer(name, functools.partial(enc.encode, disallowed_special=()))


@functools.cache
def _load_hf(name: str, path: str) -> Tokenizer:
    fast = os.path.join(path, "tokenizer.json")
    if os.path.isfile(fast):  # no transformers (so no torch) needed
        try:
            from tokenizers import Tokenizer as RawTokenizer

            raw = RawTokenizer.from_file(fast)
        except ImportError:
            pass
        else:
            return _EncodeTokenizer(name, lambda text: raw.encode(text, add_special_tokens=False).ids)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if path.endswith(".gguf"):
        path, kwargs["gguf_file"] = os.path.split(path)
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise TokenizerUnavailable(f"{name}: {exc.__class__.__name__}: {exc}") from exc
    return _EncodeTokenizer(name, functools.partial(tok.encode, add_special_tokens=False))


def message_token_stats(messages: Iterable[dict[str, str]], tok: Tokenizer) -> dict[str, int]:
    """``{"total": tokens in all contents, "assistant": tokens in assistant contents}``."""
    total = assistant = 0
    for m in messages:
        n = tok.count(m["content"])
        total += n
        if m["role"] == "assistant":
            assistant += n
    return {"total": total, "assistant": assistant}


def summarize(counts: Iterable[int]) -> dict[str, Any]:
    """``{min, mean, p95, max, count}``; ``p95`` is the nearest rank: the smallest value with at
    least 95% of the counts at or below it, i.e. ``sorted(counts)[ceil(0.95 * n) - 1]``.
    Empty input gives ``count`` 0 and ``None`` elsewhere."""
    values = sorted(counts)
    n = len(values)
    if not n:
        return {"min": None, "mean": None, "p95": None, "max": None, "count": 0}
    return {
        "min": values[0],
        "mean": sum(values) / n,
        "p95": values[(95 * n + 99) // 100 - 1],  # ceil(0.95 n) in integers
        "max": values[-1],
        "count": n,
    }
