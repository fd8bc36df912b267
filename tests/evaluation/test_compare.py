from __future__ import annotations

import numpy as np
import pytest

from service.evaluation.compare import compare_runs, paired_bootstrap, win_tie_loss


def _paired(n: int, seed: int) -> tuple[list[float], list[float]]:
    """Baseline scores and a candidate that is 0.05 better on average, with noise."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.2, 0.8, size=n)
    b = a + 0.05 + rng.normal(0.0, 0.2, size=n)
    return a.tolist(), b.tolist()


def test_bootstrap_delta_and_reproducible_with_seed():
    a, b = _paired(50, seed=1)
    first = paired_bootstrap(a, b, seed=7)
    again = paired_bootstrap(a, b, seed=7)
    other = paired_bootstrap(a, b, seed=8)
    assert first == again
    assert first["delta"] == pytest.approx(float(np.mean(b) - np.mean(a)))
    assert first["ci_low"] < first["delta"] < first["ci_high"]
    assert (other["ci_low"], other["ci_high"]) != (first["ci_low"], first["ci_high"])
    assert first["n"] == 50
    assert 0.0 <= first["p_worse"] <= 1.0


def test_bootstrap_ci_shrinks_with_more_samples():
    small = paired_bootstrap(*_paired(20, seed=3), seed=0)
    large = paired_bootstrap(*_paired(2000, seed=3), seed=0)
    small_width = small["ci_high"] - small["ci_low"]
    large_width = large["ci_high"] - large["ci_low"]
    # The standard error falls as 1/sqrt(n): sqrt(2000/20) = 10x narrower, roughly.
    assert large_width < small_width / 4
    # With 2000 samples the true +0.05 is resolved: the CI excludes 0 and covers 0.05.
    assert large["ci_low"] > 0
    assert large["ci_low"] < 0.05 < large["ci_high"]


def test_bootstrap_identical_runs_and_constant_shift():
    a = [0.1, 0.5, 0.9, 0.3]
    same = paired_bootstrap(a, a)
    assert same == {"delta": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 4, "p_worse": 1.0}
    shifted = paired_bootstrap(a, [x + 0.25 for x in a])
    assert shifted["delta"] == pytest.approx(0.25)
    assert shifted["ci_low"] == pytest.approx(0.25)
    assert shifted["ci_high"] == pytest.approx(0.25)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_bootstrap([], [])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [float("nan")])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0], confidence=1.5)


def test_win_tie_loss():
    a = [0.5, 0.5, 0.5, 0.5]
    b = [0.6, 0.5 + 1e-12, 0.4, 0.7]
    assert win_tie_loss(a, b) == {"win": 2, "tie": 1, "loss": 1}
    assert win_tie_loss(a, b, higher_is_better=False) == {"win": 1, "tie": 1, "loss": 2}
    assert win_tie_loss(a, b, tol=0.15) == {"win": 1, "tie": 3, "loss": 0}


def test_compare_runs_means_deltas_and_per_sample_order():
    base = {
        "id": "base",
        "scores": {
            "s1": {"rouge-l": 50.0, "em": 1.0},
            "s2": {"rouge-l": 40.0, "em": 0.0},
            "s3": {"rouge-l": 30.0, "em": 0.0},
            "s4": {"rouge-l": 80.0, "em": 1.0},
        },
        "predictions": {"s1": "p1-base", "s2": "p2-base", "s3": "p3-base", "s4": "p4-base"},
        "references": {"s1": "r1", "s2": "r2", "s3": "r3", "s4": "r4"},
    }
    tuned = {
        "id": "tuned",
        "scores": {
            "s1": {"rouge-l": 70.0, "em": 1.0},  # +20
            "s2": {"rouge-l": 10.0, "em": 0.0},  # -30  (largest regression)
            "s3": {"rouge-l": 25.0, "em": 1.0},  # -5
            "s4": {"rouge-l": 80.0},  # 0, em missing -> skipped for em
        },
        "predictions": {"s1": "p1-tuned", "s2": "p2-tuned", "s3": "p3-tuned", "s4": "p4-tuned"},
    }
    report = compare_runs([base, tuned], sort_metric="rouge-l", n_resamples=500, seed=1)

    assert report["baseline"] == "base"
    assert report["metrics"] == ["em", "rouge-l"]
    means = {r["id"]: r["means"] for r in report["runs"]}
    assert means["base"] == {"em": 0.5, "rouge-l": 50.0}
    assert means["tuned"]["rouge-l"] == pytest.approx((70 + 10 + 25 + 80) / 4)
    assert means["tuned"]["em"] == pytest.approx(2 / 3)

    rouge = report["comparisons"][0]["metrics"]["rouge-l"]
    assert report["comparisons"][0]["id"] == "tuned"
    assert rouge["delta"] == pytest.approx((20 - 30 - 5 + 0) / 4)
    assert (rouge["win"], rouge["tie"], rouge["loss"]) == (1, 1, 2)
    assert rouge["n"] == 4
    assert rouge["ci_low"] <= rouge["delta"] <= rouge["ci_high"]
    em = report["comparisons"][0]["metrics"]["em"]
    assert em["n"] == 3  # s4 has no em in the tuned run: paired on s1..s3
    assert em["delta"] == pytest.approx(1 / 3)

    order = [row["sample"] for row in report["per_sample"]]
    assert order == ["s2", "s3", "s4", "s1"]
    worst = report["per_sample"][0]
    assert worst["delta"] == pytest.approx(-30.0)
    assert worst["scores"] == {"base": 40.0, "tuned": 10.0}
    assert worst["predictions"] == {"base": "p2-base", "tuned": "p2-tuned"}
    assert worst["reference"] == "r2"

    # Reproducible: same seed, same report.
    assert compare_runs([base, tuned], sort_metric="rouge-l", n_resamples=500, seed=1) == report


def test_compare_runs_lower_is_better_and_three_runs():
    runs = [
        {"id": 1, "scores": {"a": {"len": 10.0}, "b": {"len": 10.0}}},
        {"id": 2, "scores": {"a": {"len": 12.0}, "b": {"len": 5.0}}},
        {"id": 3, "scores": {"a": {"len": 9.0}, "b": {"len": 30.0}}},
    ]
    report = compare_runs(runs, higher_is_better={"len": False}, n_resamples=200)
    by_id = {c["id"]: c["metrics"]["len"] for c in report["comparisons"]}
    assert (by_id[2]["win"], by_id[2]["loss"]) == (1, 1)
    # Regressions for a lower-is-better metric are increases; the worst over candidates wins:
    # sample b: run 3 is +20 (worst), sample a: run 2 is +2.
    assert [row["sample"] for row in report["per_sample"]] == ["b", "a"]
    assert report["per_sample"][0]["delta"] == pytest.approx(20.0)
    # Descriptive metric: no win/loss, still a delta.
    neutral = compare_runs(runs[:2], higher_is_better={"len": None}, n_resamples=50)
    assert neutral["comparisons"][0]["metrics"]["len"]["win"] is None
    assert neutral["comparisons"][0]["metrics"]["len"]["delta"] == pytest.approx(-1.5)


def test_compare_runs_validates():
    with pytest.raises(ValueError):
        compare_runs([])
    with pytest.raises(ValueError):
        compare_runs([{"id": 1, "scores": {}}, {"id": 1, "scores": {}}])
    with pytest.raises(ValueError):
        compare_runs([{"id": 1, "scores": {}}], baseline=2)
