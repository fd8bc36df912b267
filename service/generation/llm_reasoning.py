"""Reasoning models: ``<think>...</think>`` blocks are moved from the content into ``reasoning``
(also an unopened ``...</think>`` prefix, as Qwen3/DeepSeek-R1 chat templates produce, and an
unclosed ``<think>`` tail when the answer was cut off); ``message_field`` reads a
``reasoning_content`` (vLLM, DeepSeek) or ``reasoning`` field on the message.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "message_field",
    "split_reasoning",
]

_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def split_reasoning(content: str | None) -> tuple[str, str | None]:
    """``(answer, reasoning)`` from a content string that may hold ``<think>`` blocks."""
    if not content:
        return "", None
    parts: list[str] = []

    def take(match: re.Match[str]) -> str:
        parts.append(match.group(1).strip())
        return ""

    text = _THINK_BLOCK.sub(take, content)
    if "</think>" in text:  # template opened <think> in the prompt: the answer starts after it
        before, _, text = text.partition("</think>")
        parts.insert(0, before.strip())
    if "<think>" in text:  # cut off while thinking
        text, _, after = text.partition("<think>")
        parts.append(after.strip())
    reasoning = "\n\n".join(p for p in parts if p) or None
    return text.strip(), reasoning


def message_field(message: Any, name: str) -> str | None:
    value = getattr(message, name, None)
    if value is None and getattr(message, "model_extra", None):
        value = message.model_extra.get(name)
    return value if isinstance(value, str) and value.strip() else None
