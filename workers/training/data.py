"""OpenAI-messages JSONL -> token ids with loss only on the assistant turns, and a padding collator.

Each line of the export is ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
(other keys are ignored). A conversation is rendered with the base model's own chat template;
assistant spans are found by rendering prefixes of the conversation with the same template:

    span of assistant turn i = [len(render(messages[:i], add_generation_prompt=True)),
                                len(render(messages[:i+1])))

which is exact whenever each prefix renders as a prefix of the whole (ChatML/SmolLM2, Llama 3,
Mistral...). Templates that render history differently from the latest turn (Qwen3 drops
``<think>`` blocks from earlier turns) fall back to locating the assistant content in the full
text and extending it over the end-of-turn marker the template appends. Character spans become
token labels through the fast tokenizer's offset mapping, so BPE merges across the boundary
cannot shift them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "IGNORE_INDEX",
    "DataStats",
    "PaddingCollator",
    "TokenizedData",
    "assistant_char_spans",
    "build_dataset",
    "file_sha256",
    "load_messages_jsonl",
    "tokenize_conversation",
]

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_messages_jsonl(
    path: str | os.PathLike, *, max_samples: int | None = None
) -> list[list[dict[str, str]]]:
    """Read an OpenAI-messages JSONL file. Raises ``ValueError`` naming the line of the first bad record."""
    conversations: list[list[dict[str, str]]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if max_samples is not None and len(conversations) >= max_samples:
                break
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg})") from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise ValueError(f"{where}: expected an object with a non-empty 'messages' list")
            clean = []
            for j, message in enumerate(messages):
                if not isinstance(message, dict):
                    raise ValueError(f"{where}: messages[{j}] is not an object")  # noqa: TRY004
                role, content = message.get("role"), message.get("content")
                if role not in ROLES:
                    raise ValueError(
                        f"{where}: messages[{j}].role must be one of {', '.join(ROLES)}, got {role!r}"
                    )
                if not isinstance(content, str):
                    raise ValueError(f"{where}: messages[{j}].content must be a string")  # noqa: TRY004
                clean.append({"role": role, "content": content})
            if not any(m["role"] == "assistant" for m in clean):
                raise ValueError(f"{where}: no assistant message to learn from")
            conversations.append(clean)
    return conversations


def _render(tokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):  # defensive: some versions wrap the string
        text = text[0] if isinstance(text, list) else str(text)
    return text


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def assistant_char_spans(
    tokenizer, messages: list[dict[str, str]]
) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` with the tokenizer's chat template; return the text and the
    ``[start, end)`` character spans of every assistant turn (end-of-turn marker included)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; choose a chat/instruct base model")
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        upto = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        pre = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else None
        if (
            pre is not None
            and upto.startswith(pre)
            and full.startswith(upto)
            and len(pre) >= cursor
        ):
            if len(upto) > len(pre):
                spans.append((len(pre), len(upto)))
                cursor = len(upto)
            continue
        # Fallback: find the content in the full rendering after the previous span.
        content = message["content"].strip()
        if not content:
            continue
        start = full.find(content, cursor)
        if start < 0:
            continue
        end = start + len(content)
        at = upto.rfind(content)
        if at >= 0:  # extend over what the template appends after the content (e.g. "<|im_end|>\n")
            suffix = upto[at + len(content) :]
            end += _common_prefix_len(full[end:], suffix)
        spans.append((start, end))
        cursor = end
    return full, spans


def tokenize_conversation(
    tokenizer, messages: list[dict[str, str]], max_seq_length: int
) -> dict[str, Any] | None:
    """``{"input_ids", "attention_mask", "labels", "truncated"}`` with labels = -100 outside
    assistant turns; ``None`` when no assistant token survives truncation."""
    text, spans = assistant_char_spans(tokenizer, messages)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        input_ids = list(enc["input_ids"])
        labels = [IGNORE_INDEX] * len(input_ids)
        k = 0
        for j, (s, e) in enumerate(enc["offset_mapping"]):
            while k < len(spans) and spans[k][1] <= s:
                k += 1
            if k < len(spans) and s < spans[k][1] and max(e, s + 1) > spans[k][0]:
                labels[j] = input_ids[j]
    else:  # slow tokenizer: no offsets, encode the pieces between span boundaries separately
        input_ids, labels, pos = [], [], 0
        pieces = []
        for s, e in spans:
            pieces += [(text[pos:s], False), (text[s:e], True)]
            pos = e
        pieces.append((text[pos:], False))
        for piece, learn in pieces:
            if piece:
                ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
                input_ids += ids
                labels += ids if learn else [IGNORE_INDEX] * len(ids)
    truncated = len(input_ids) > max_seq_length
    input_ids, labels = input_ids[:max_seq_length], labels[:max_seq_length]
    if all(label == IGNORE_INDEX for label in labels):
        return None
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": labels,
        "truncated": truncated,
    }


@dataclass
class DataStats:
    path: str
    sha256: str
    samples_read: int = 0
    samples_used: int = 0
    dropped_no_assistant_tokens: int = 0
    truncated: int = 0
    tokens: int = 0
    assistant_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TokenizedData:
    examples: list[dict[str, list[int]]] = field(default_factory=list)
    stats: DataStats | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]


def build_dataset(
    tokenizer, path: str | os.PathLike, *, max_seq_length: int, max_samples: int | None = None
) -> TokenizedData:
    """Load and tokenize one JSONL split. The result is a map-style dataset for ``Trainer``."""
    conversations = load_messages_jsonl(path, max_samples=max_samples)
    stats = DataStats(
        path=str(Path(path)), sha256=file_sha256(path), samples_read=len(conversations)
    )
    examples = []
    for messages in conversations:
        ex = tokenize_conversation(tokenizer, messages, max_seq_length)
        if ex is None:
            stats.dropped_no_assistant_tokens += 1
            continue
        stats.truncated += int(ex.pop("truncated"))
        stats.tokens += len(ex["input_ids"])
        stats.assistant_tokens += sum(1 for label in ex["labels"] if label != IGNORE_INDEX)
        examples.append(ex)
    stats.samples_used = len(examples)
    return TokenizedData(examples=examples, stats=stats)


class PaddingCollator:
    """Right-pads a list of examples to the longest (optionally rounded up to a multiple)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = (length + m - 1) // m * m
        n = len(features)
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, :k] = torch.tensor(f["input_ids"], dtype=torch.long)
            attention_mask[i, :k] = 1
            labels[i, :k] = torch.tensor(f["labels"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
