"""A pairwise LLM judge: which of two answers to the same prompt is better.

The judge sees the pair twice, once in each order (``A`` then ``B``, and swapped), so a judge that
favours a position cancels out: an answer wins an item only when the judge prefers it in both
orders, an order-dependent verdict is a tie. Used by the win-rate evaluation
(``workers/evaluation/preference.py``) and by the pre-ranking of comparison items
(``workers/preferences/runner.py``). Plain functions over ``service.generation.llm``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service.generation import llm

SYSTEM = ("You are an impartial judge. You compare two answers, A and B, to the same "
          "conversation and decide which one better answers its last user turn: correct, "
          "faithful to the conversation, helpful and concise. Ignore the order of the answers "
          "and their length as such. Reply with one short reason and then, on the last line, "
          "exactly one of: 'Verdict: A', 'Verdict: B', 'Verdict: tie'.")
_VERDICT = re.compile(r"verdict\s*[:：]?\s*\**\s*(a|b|tie)\b", re.IGNORECASE)
_BARE = re.compile(r"^\W*(a|b|tie)\W*$", re.IGNORECASE)


class NoVerdict(ValueError):
    """The judge's reply names no verdict."""


@dataclass
class Judgement:
    """``score``: how much the first answer of the pair won, over both orders (1, 0.5 or 0;
    0.75/0.25 when one order tied); ``verdicts``: the two raw verdicts, first answer as ``A``
    then as ``B``; ``consistent``: the two orders agree."""

    score: float
    verdicts: list[str]
    consistent: bool
    replies: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0


def transcript(prompt: Sequence[dict[str, Any]]) -> str:
    return "\n\n".join(f"[{m.get('role')}]\n{m.get('content')}" for m in prompt)


def messages_for(prompt: Sequence[dict[str, Any]], a: str, b: str) -> list[dict[str, str]]:
    user = (f"## Conversation\n{transcript(prompt)}\n\n## Answer A\n{a}\n\n## Answer B\n{b}\n\n"
            "Which answer is better? End with 'Verdict: A', 'Verdict: B' or 'Verdict: tie'.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str:
    """``"A"``, ``"B"`` or ``"tie"`` from a reply (the last ``Verdict:`` line wins)."""
    found = _VERDICT.findall(text or "")
    if not found:
        bare = _BARE.match((text or "").strip())
        if not bare:
            raise NoVerdict(f"the judge's reply names no verdict: {(text or '')[:200]!r}")
        found = [bare.group(1)]
    word = found[-1].lower()
    return "tie" if word == "tie" else word.upper()


def combine(first_as_a: str, first_as_b: str) -> tuple[float, bool]:
    """The first answer's score over the two orders, and whether they agree."""
    s1 = {"A": 1.0, "B": 0.0, "tie": 0.5}[first_as_a]
    s2 = {"B": 1.0, "A": 0.0, "tie": 0.5}[first_as_b]
    return (s1 + s2) / 2, s1 == s2


Chat = Callable[[list[dict[str, str]]], llm.LLMResult]


def judge_pair(chat: Chat, prompt: Sequence[dict[str, Any]], first: str, second: str) -> Judgement:
    """Judge ``first`` against ``second`` in both orders. Raises :class:`NoVerdict` or
    ``llm.LLMError``."""
    replies, verdicts = [], []
    tokens = [0, 0]
    for a, b in ((first, second), (second, first)):
        result = chat(messages_for(prompt, a, b))
        replies.append(result.content)
        verdicts.append(parse_verdict(result.content))
        tokens[0] += result.prompt_tokens or 0
        tokens[1] += result.completion_tokens or 0
    score, consistent = combine(verdicts[0], verdicts[1])
    return Judgement(score=score, verdicts=verdicts, consistent=consistent, replies=replies,
                     prompt_tokens=tokens[0], completion_tokens=tokens[1])


def provider_chat(provider: Any, params: dict[str, Any] | None = None) -> Chat:
    """A :data:`Chat` over an OpenAI-compatible provider (greedy unless ``params`` say)."""
    from service.generation import service as generation_service
    from service.generation.ratelimit import provider_limiter

    settings = generation_service.provider_settings(provider)
    limiter = provider_limiter(provider)
    merged = {"temperature": 0.0, "max_tokens": 512, **(params or {})}
    return lambda messages: llm.chat(settings, messages, params=merged, limiter=limiter)
