"""Per-sample evaluation metrics, as plugins.

A metric is one function plus ``@register("name")``::

    @register("shouts", description="1 when the answer is upper case")
    def shouts(prediction: str, reference: str, **options) -> float:
        return float(prediction.isupper())

The function gets one prediction and its reference (plus per-metric options) and returns a
float, or a dict of floats when it yields several scores at once (``rouge`` yields ``rouge-1``,
``rouge-2`` and ``rouge-l``; declare them with ``outputs=``). Async functions (``async def``)
register the same way and are run by :func:`ascore_sample`; metrics that need an LLM judge use
``kind="llm"`` and receive whatever the caller passes in their options (a client, settings).

Scales: ``bleu-4`` and ``rouge-*`` are 0–100 exactly as LLaMA-Factory reports them (so numbers
are comparable with its ``predict_results.json``); the other bounded metrics are 0–1;
``answer_length`` counts characters. :class:`Metric` records the scale and direction.

No database, no HTTP: this module is pure and safe to import from the API process (jieba, nltk
and rouge_chinese are imported on first use).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import threading
import unicodedata
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DEFAULT_METRICS",
    "Metric",
    "MetricError",
    "aggregate",
    "ascore_sample",
    "get_metric",
    "list_metrics",
    "register",
    "score_sample",
    "score_samples",
    "unregister",
]

MetricKind = Literal["reference", "llm"]
Score = float | dict[str, float]
MetricsSpec = Sequence[str] | Mapping[str, Mapping[str, Any] | None] | None


class MetricError(ValueError):
    """Unknown metric, bad options, or a metric that returned something that is not a score."""


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., Any] = field(repr=False)
    kind: MetricKind = "reference"
    """``reference``: a pure function of prediction and reference; ``llm``: needs a judge passed
    in its options by the caller (the evaluation task wires the client)."""
    is_async: bool = False
    outputs: tuple[str, ...] = ()
    """Names of the scores it yields; ``(name,)`` for a metric that returns one float."""
    higher_is_better: bool | None = True
    """``None`` for descriptive numbers such as length, where neither direction is better."""
    scale: float | None = 1.0
    """The best possible value (1.0 or 100.0); ``None`` when unbounded."""
    description: str = ""


_REGISTRY: dict[str, Metric] = {}
_REGISTRY_LOCK = threading.Lock()


def register(
    name: str,
    *,
    outputs: Sequence[str] | None = None,
    kind: MetricKind = "reference",
    higher_is_better: bool | None = True,
    scale: float | None = 1.0,
    description: str | None = None,
    replace: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add ``fn(prediction, reference, **options)`` to the registry as ``name``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        metric = Metric(
            name=name,
            fn=fn,
            kind=kind,
            is_async=inspect.iscoroutinefunction(fn),
            outputs=tuple(outputs) if outputs else (name,),
            higher_is_better=higher_is_better,
            scale=scale,
            description=(description or inspect.getdoc(fn) or "").strip().split("\n")[0],
        )
        with _REGISTRY_LOCK:
            if name in _REGISTRY and not replace:
                raise MetricError(f"metric {name!r} is already registered")
            _REGISTRY[name] = metric
        return fn

    return decorator


def unregister(name: str) -> None:
    with _REGISTRY_LOCK:
        _REGISTRY.pop(name, None)


def get_metric(name: str) -> Metric:
    """The metric registered as ``name``, or the one that yields the output ``name``."""
    metric = _REGISTRY.get(name)
    if metric is not None:
        return metric
    for candidate in _REGISTRY.values():
        if name in candidate.outputs:
            return candidate
    raise MetricError(f"unknown metric {name!r}; known: {', '.join(sorted(_REGISTRY))}")


def list_metrics() -> list[Metric]:
    return sorted(_REGISTRY.values(), key=lambda m: m.name)


# --------------------------------------------------------------------------------------------
# Scoring several metrics on one sample, and aggregating
# --------------------------------------------------------------------------------------------

DEFAULT_METRICS: tuple[str, ...] = ("exact_match", "bleu-4", "rouge", "char_f1", "answer_length")


def _plan(metrics: MetricsSpec) -> list[tuple[Metric, dict[str, Any], set[str] | None]]:
    """Resolve names (metric names or output names such as ``rouge-l``) into calls.

    Returns ``(metric, options, keep)`` where ``keep`` is the subset of outputs asked for
    (``None`` = all of them). A metric asked for through several output names runs once.
    """
    if metrics is None:
        metrics = DEFAULT_METRICS
    items: Iterable[tuple[str, Mapping[str, Any] | None]]
    if isinstance(metrics, Mapping):
        items = metrics.items()
    else:
        if isinstance(metrics, str):
            raise MetricError("metrics must be a list of names or a mapping name -> options")
        items = ((name, None) for name in metrics)

    plan: dict[str, tuple[Metric, dict[str, Any], set[str] | None]] = {}
    for name, options in items:
        metric = get_metric(name)
        keep: set[str] | None = None if name == metric.name else {name}
        if metric.name in plan:
            _, prev_options, prev_keep = plan[metric.name]
            if options:
                prev_options.update(options)
            if prev_keep is None or keep is None:
                keep = None
            else:
                keep = prev_keep | keep
            plan[metric.name] = (metric, prev_options, keep)
        else:
            plan[metric.name] = (metric, dict(options or {}), keep)
    return list(plan.values())


def _collect(out: dict[str, float], metric: Metric, value: Any, keep: set[str] | None) -> None:
    if isinstance(value, Mapping):
        for key, v in value.items():
            if keep is not None and key not in keep:
                continue
            if key in out:
                raise MetricError(f"metric {metric.name!r} yields {key!r}, already scored")
            out[key] = _as_float(metric, v)
    else:
        if keep is not None and metric.name not in keep:
            return
        if metric.name in out:
            raise MetricError(f"metric {metric.name!r} scored twice")
        out[metric.name] = _as_float(metric, value)


def _as_float(metric: Metric, value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    raise MetricError(f"metric {metric.name!r} returned {type(value).__name__}, not a number")


def score_sample(prediction: str, reference: str, metrics: MetricsSpec = None) -> dict[str, float]:
    """Score one prediction with several metrics: ``{"exact_match": 0.0, "rouge-1": 41.2, ...}``.

    ``metrics`` is a list of names or a mapping ``name -> options``; names may be a metric
    (``rouge``) or one of its outputs (``rouge-l``). Async metrics need :func:`ascore_sample`.
    """
    out: dict[str, float] = {}
    for metric, options, keep in _plan(metrics):
        if metric.is_async:
            raise MetricError(f"metric {metric.name!r} is async; use ascore_sample()")
        _collect(out, metric, metric.fn(prediction, reference, **options), keep)
    return out


async def ascore_sample(
    prediction: str, reference: str, metrics: MetricsSpec = None
) -> dict[str, float]:
    """Like :func:`score_sample`, awaiting async metrics (e.g. an LLM judge)."""
    out: dict[str, float] = {}
    for metric, options, keep in _plan(metrics):
        value = metric.fn(prediction, reference, **options)
        if inspect.isawaitable(value):
            value = await value
        _collect(out, metric, value, keep)
    return out


def score_samples(
    pairs: Iterable[tuple[str, str]], metrics: MetricsSpec = None
) -> list[dict[str, float]]:
    """Score ``(prediction, reference)`` pairs; returns one score dict per pair."""
    return [score_sample(p, r, metrics) for p, r in pairs]


def aggregate(per_sample_scores: Iterable[Mapping[str, float | None]]) -> dict[str, float]:
    """Mean of every metric over the samples that have it (missing, ``None`` and NaN skipped).

    ``aggregate([{"em": 1, "f1": 0.5}, {"em": 0}]) == {"em": 0.5, "f1": 0.5}``; keys keep the
    order in which they were first seen.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for scores in per_sample_scores:
        for key, value in scores.items():
            if value is None or isinstance(value, (str, bytes)):
                continue
            value = float(value)
            if math.isnan(value):
                continue
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


# --------------------------------------------------------------------------------------------
# Built-in metrics
# --------------------------------------------------------------------------------------------


@register("exact_match", description="1.0 when prediction and reference are equal after strip()")
def exact_match(prediction: str, reference: str) -> float:
    return float(prediction.strip() == reference.strip())


# --- BLEU-4 / ROUGE as LLaMA-Factory computes them (src/llamafactory/train/sft/metric.py) ---

_jieba_lock = threading.Lock()
_jieba_ready = False


def _jieba():
    global _jieba_ready
    import jieba

    if not _jieba_ready:
        with _jieba_lock:
            if not _jieba_ready:
                jieba.setLogLevel(logging.CRITICAL)
                jieba.initialize()
                _jieba_ready = True
    return jieba


def segment(text: str) -> list[str]:
    """jieba word segmentation, exactly ``list(jieba.cut(text))`` as LLaMA-Factory does."""
    return list(_jieba().cut(text))


# nltk warns for every hypothesis without 2/3/4-gram overlaps; the score is still what we want.
warnings.filterwarnings("ignore", message=r".*counts of \d-gram overlaps", category=UserWarning)


@register(
    "bleu-4",
    scale=100.0,
    description="Character BLEU-4 with smoothing method3, x100 (as LLaMA-Factory)",
)
def bleu4(prediction: str, reference: str) -> float:
    """``sentence_bleu([list(reference)], list(prediction), method3) * 100``, rounded to 4 places.

    As in LLaMA-Factory this is on characters, so strings shorter than 4 characters never reach
    100 even when identical (no 3/4-grams exist; method3 smooths them to 1/2, 1/4).
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if not prediction or not reference:
        return 0.0
    score = sentence_bleu(
        [list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3
    )
    return round(float(score) * 100, 4)


@register(
    "rouge",
    outputs=("rouge-1", "rouge-2", "rouge-l"),
    scale=100.0,
    description="ROUGE-1/2/L f-scores on jieba words, x100 (as LLaMA-Factory)",
)
def rouge(prediction: str, reference: str) -> dict[str, float]:
    """``rouge_chinese.Rouge().get_scores`` on space-joined jieba segments; f-scores x100.

    An empty (or all-whitespace) prediction or reference scores 0 for all three, as in LF.
    """
    hypothesis = segment(prediction)
    ref_words = segment(reference)
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(ref_words).split()) == 0:
        return {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    from rouge_chinese import Rouge

    scores = Rouge().get_scores(" ".join(hypothesis), " ".join(ref_words))[0]
    return {k: round(float(v["f"]) * 100, 4) for k, v in scores.items()}


# --- character F1 ---


def _is_punctuation(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


@register("char_f1", description="F1 of the character multisets of prediction and reference")
def char_f1(
    prediction: str,
    reference: str,
    *,
    ignore_whitespace: bool = True,
    ignore_punctuation: bool = False,
) -> float:
    """SQuAD-style F1 on characters (counted with multiplicity): suits Chinese, which has no
    word boundaries. Both empty: 1.0; exactly one empty: 0.0."""

    def chars(text: str) -> Counter[str]:
        return Counter(
            ch
            for ch in text
            if not (ignore_whitespace and ch.isspace())
            and not (ignore_punctuation and _is_punctuation(ch))
        )

    pred, ref = chars(prediction), chars(reference)
    if not pred and not ref:
        return 1.0
    if not pred or not ref:
        return 0.0
    overlap = sum((pred & ref).values())
    if overlap == 0:
        return 0.0
    precision = overlap / sum(pred.values())
    recall = overlap / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


# --- keyword sets (the course document's task: keywords separated by "," "，" "、") ---

DEFAULT_KEYWORD_SEPARATORS: tuple[str, ...] = (",", "，", "、")
_EDGE_PUNCTUATION = "。．.;；:：!！?？\"'“”‘’「」《》()（）[]【】"
_SPACES = re.compile(r"\s+")


def split_keywords(
    text: str,
    *,
    separators: str | Sequence[str] = DEFAULT_KEYWORD_SEPARATORS,
    casefold: bool = False,
    strip_punctuation: bool = True,
) -> set[str]:
    """The normalized set of keywords in ``text``.

    Splits on any of ``separators`` (a string is one separator), collapses runs of whitespace to
    one space, strips each item (and sentence punctuation at its ends unless
    ``strip_punctuation=False``), drops empty items. Set semantics: duplicates count once.
    """
    seps = [separators] if isinstance(separators, str) else list(separators)
    if not seps or any(not s for s in seps):
        raise MetricError("keyword separators must be non-empty strings")
    pattern = "|".join(re.escape(s) for s in sorted(seps, key=len, reverse=True))
    items = set()
    for item in re.split(pattern, text):
        item = _SPACES.sub(" ", item).strip()
        if strip_punctuation:
            item = item.strip(_EDGE_PUNCTUATION).strip()
        if casefold:
            item = item.casefold()
        if item:
            items.add(item)
    return items


@register(
    "keywords",
    outputs=("keyword_precision", "keyword_recall", "keyword_f1"),
    description="Precision/recall/F1 of the predicted keyword set against the reference set",
)
def keywords(
    prediction: str,
    reference: str,
    *,
    separators: str | Sequence[str] = DEFAULT_KEYWORD_SEPARATORS,
    casefold: bool = False,
    strip_punctuation: bool = True,
) -> dict[str, float]:
    """Set precision, recall and F1. Both sets empty: all 1.0; one empty: all 0.0."""
    opts = {"separators": separators, "casefold": casefold, "strip_punctuation": strip_punctuation}
    pred = split_keywords(prediction, **opts)
    ref = split_keywords(reference, **opts)
    if not pred and not ref:
        return {"keyword_precision": 1.0, "keyword_recall": 1.0, "keyword_f1": 1.0}
    hits = len(pred & ref)
    precision = hits / len(pred) if pred else 0.0
    recall = hits / len(ref) if ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"keyword_precision": precision, "keyword_recall": recall, "keyword_f1": f1}


# --- structure and length ---


@register("json_valid", description="1.0 when the prediction is JSON (matching a schema if given)")
def json_valid(
    prediction: str,
    reference: str,
    *,
    schema: Mapping[str, Any] | None = None,
    extract: bool = False,
) -> float:
    """Strict by default: the whole (stripped) prediction must parse. ``extract=True`` accepts
    the first JSON value found in the text (inside a ```json fence, say), as the generation
    parsers do. A ``schema`` is checked with ``jsonschema`` (required when a schema is given).
    """
    if extract:
        from service.generation import parsers as generation_parsers

        try:
            generation_parsers.parse_json(prediction, schema=schema)
        except generation_parsers.ParseFailure:
            return 0.0
        return 1.0
    try:
        value = json.loads(prediction.strip())
    except (ValueError, TypeError):
        return 0.0
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError:
            return 0.0
    return 1.0


@register(
    "answer_length",
    higher_is_better=None,
    scale=None,
    description="Length of the stripped prediction in characters",
)
def answer_length(prediction: str, reference: str) -> float:
    return float(len(prediction.strip()))
