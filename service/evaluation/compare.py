"""Comparing evaluation runs scored on the same samples.

Everything here is paired: a candidate run is compared with the baseline only on the samples
both of them scored, so sample difficulty cancels out. Confidence intervals come from a paired
percentile bootstrap over samples (resampling sample indices, not runs), with a seeded numpy
``Generator`` so a report is reproducible.

Pure functions, no database: the evaluation service loads ``EvalPrediction`` rows into the
plain shapes below and stores what :func:`compare_runs` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["compare_runs", "paired_bootstrap", "win_tie_loss"]

# Resample in blocks so n_resamples x n indices never take more than ~64 MB at once.
_MAX_BLOCK_CELLS = 8_000_000


def _as_pair(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.ndim != 1 or xb.ndim != 1:
        raise ValueError("scores must be flat sequences of numbers")
    if xa.shape != xb.shape:
        raise ValueError(f"paired scores differ in length: {xa.size} vs {xb.size}")
    if xa.size == 0:
        raise ValueError("no paired samples to compare")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError("scores must be finite numbers")
    return xa, xb


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 2000,
    seed: int | None = 0,
    confidence: float = 0.95,
) -> dict[str, float]:
    """Paired percentile bootstrap of ``mean(b) - mean(a)``.

    ``a[i]`` and ``b[i]`` are the scores of the same sample under the baseline and the candidate.
    Each resample draws ``n`` sample indices with replacement and takes the mean difference on
    them. Returns ``{"delta", "ci_low", "ci_high", "n", "p_worse"}``: ``delta`` is the observed
    ``mean(b) - mean(a)``, the CI bounds are the ``(1-confidence)/2`` and ``(1+confidence)/2``
    percentiles of the resampled deltas, ``p_worse`` the share of resampled deltas <= 0 (how
    often the candidate did not beat the baseline). Same inputs and seed, same answer.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be between 0 and 1")
    if n_resamples < 1:
        raise ValueError("n_resamples must be positive")
    xa, xb = _as_pair(a, b)
    diff = xb - xa
    n = diff.size
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_resamples, dtype=np.float64)
    block = max(1, _MAX_BLOCK_CELLS // n)
    for start in range(0, n_resamples, block):
        stop = min(n_resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        deltas[start:stop] = diff[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    ci_low, ci_high = np.quantile(deltas, [alpha, 1.0 - alpha])
    return {
        "delta": float(diff.mean()),
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "n": int(n),
        "p_worse": float((deltas <= 0).mean()),
    }


def win_tie_loss(
    a: Sequence[float], b: Sequence[float], tol: float = 1e-9, *, higher_is_better: bool = True
) -> dict[str, int]:
    """Count samples where candidate ``b`` beats (``win``), ties or loses to baseline ``a``.

    Differences within ``tol`` are ties. With ``higher_is_better=False`` lower scores win.
    """
    xa, xb = _as_pair(a, b)
    diff = xb - xa if higher_is_better else xa - xb
    win = int((diff > tol).sum())
    loss = int((diff < -tol).sum())
    return {"win": win, "tie": int(diff.size - win - loss), "loss": loss}


def _finite(value: Any) -> bool:
    if value is None or isinstance(value, (str, bytes)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def compare_runs(
    runs: Sequence[Mapping[str, Any]],
    *,
    baseline: int = 0,
    metrics: Sequence[str] | None = None,
    sort_metric: str | None = None,
    higher_is_better: Mapping[str, bool | None] | None = None,
    n_resamples: int = 2000,
    seed: int | None = 0,
    confidence: float = 0.95,
    tol: float = 1e-9,
) -> dict[str, Any]:
    """Compare runs scored on the same samples against ``runs[baseline]``.

    A run is ``{"id": ..., "scores": {sample_key: {metric: value}}}``, optionally with
    ``"predictions": {sample_key: str}`` and ``"references": {sample_key: str}``. Missing,
    ``None`` or NaN scores are skipped pairwise (a sample counts for a metric only where both
    runs scored it).

    ``higher_is_better`` maps metric -> direction (default: higher is better; ``None`` means
    descriptive, e.g. length: deltas and CIs are still given, win/loss are not). ``sort_metric``
    (default: the first compared metric, alphabetically) orders ``per_sample`` from the largest
    regression of any candidate against the baseline to the largest improvement.

    Returns::

        {"baseline": id, "metrics": [...], "confidence": 0.95, "n_resamples": 2000, "seed": 0,
         "runs": [{"id", "n_samples", "means": {metric: mean}}],          # every run, in order
         "comparisons": [{"id", "metrics": {metric: {"baseline_mean", "mean", "delta",
                          "ci_low", "ci_high", "p_worse", "n", "win", "tie", "loss"}}}],
         "sort_metric": metric,
         "per_sample": [{"sample", "delta", "scores": {run_id: v},
                         "predictions": {run_id: text}, "reference": text}]}

    A per-sample ``delta`` is ``candidate - baseline`` for the candidate that did worst on that
    sample (with several candidates), on ``sort_metric``.
    """
    if not runs:
        raise ValueError("no runs to compare")
    if not 0 <= baseline < len(runs):
        raise ValueError(f"baseline index {baseline} out of range for {len(runs)} runs")
    directions = dict(higher_is_better or {})
    ids = [run["id"] for run in runs]
    if len(set(map(repr, ids))) != len(ids):
        raise ValueError("run ids must be unique")
    base = runs[baseline]
    base_scores: Mapping[str, Mapping[str, Any]] = base.get("scores") or {}

    if metrics is None:
        names: set[str] = set()
        for run in runs:
            for sample_scores in (run.get("scores") or {}).values():
                names.update(sample_scores)
        metric_names = sorted(names)
    else:
        metric_names = list(metrics)

    summaries = []
    for run in runs:
        scores = run.get("scores") or {}
        means = {}
        for m in metric_names:
            vals = [float(s[m]) for s in scores.values() if _finite(s.get(m))]
            mean = _mean(vals)
            if mean is not None:
                means[m] = mean
        summaries.append({"id": run["id"], "n_samples": len(scores), "means": means})

    comparisons = []
    for index, run in enumerate(runs):
        if index == baseline:
            continue
        scores = run.get("scores") or {}
        per_metric: dict[str, Any] = {}
        for m in metric_names:
            keys = [
                k
                for k in base_scores
                if k in scores and _finite(base_scores[k].get(m)) and _finite(scores[k].get(m))
            ]
            if not keys:
                continue
            a = [float(base_scores[k][m]) for k in keys]
            b = [float(scores[k][m]) for k in keys]
            boot = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed, confidence=confidence)
            direction = directions.get(m, True)
            entry = {
                "baseline_mean": float(np.mean(a)),
                "mean": float(np.mean(b)),
                **boot,
            }
            if direction is None:
                entry.update(win=None, tie=None, loss=None)
            else:
                entry.update(win_tie_loss(a, b, tol, higher_is_better=direction))
            per_metric[m] = entry
        comparisons.append({"id": run["id"], "metrics": per_metric})

    chosen = sort_metric if sort_metric is not None else (metric_names[0] if metric_names else None)
    per_sample = _per_sample(runs, baseline, chosen, directions.get(chosen, True))
    return {
        "baseline": base["id"],
        "metrics": metric_names,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "seed": seed,
        "runs": summaries,
        "comparisons": comparisons,
        "sort_metric": chosen,
        "per_sample": per_sample,
    }


def _per_sample(
    runs: Sequence[Mapping[str, Any]], baseline: int, metric: str | None, direction: bool | None
) -> list[dict[str, Any]]:
    if metric is None:
        return []
    base = runs[baseline]
    base_scores = base.get("scores") or {}
    sign = -1.0 if direction is False else 1.0
    rows = []
    for key, sample_scores in base_scores.items():
        if not _finite(sample_scores.get(metric)):
            continue
        base_value = float(sample_scores[metric])
        scores = {base["id"]: base_value}
        predictions = {}
        reference = None
        worst: tuple[float, float] | None = None  # (signed "better" delta, raw delta)
        for index, run in enumerate(runs):
            if (run.get("predictions") or {}).get(key) is not None:
                predictions[run["id"]] = run["predictions"][key]
            if reference is None and (run.get("references") or {}).get(key) is not None:
                reference = run["references"][key]
            if index == baseline:
                continue
            value = ((run.get("scores") or {}).get(key) or {}).get(metric)
            if not _finite(value):
                continue
            scores[run["id"]] = float(value)
            delta = float(value) - base_value
            # sign * delta < 0 is a regression whatever the metric's direction
            if worst is None or sign * delta < worst[0]:
                worst = (sign * delta, delta)
        if worst is None and len(runs) > 1:
            continue
        row: dict[str, Any] = {"sample": key, "delta": worst[1] if worst else 0.0}
        row["_order"] = worst[0] if worst else 0.0
        row["scores"] = scores
        if predictions:
            row["predictions"] = predictions
        if reference is not None:
            row["reference"] = reference
        rows.append(row)
    rows.sort(key=lambda r: (r["_order"], str(r["sample"])))
    for row in rows:
        del row["_order"]
    return rows
