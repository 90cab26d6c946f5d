"""The report's statistics: metrics per resample agree with the task metrics, intervals cover, paired
tests find a planted difference and nothing between identical predictions, Holm, and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from nluforge.report.stats import (
    METRICS,
    N_RESAMPLES,
    Eval,
    bootstrap,
    compare,
    from_seeds,
    holm,
    resample_index,
    score,
)


def _classes(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, k, n))
    return labels, preds


@pytest.mark.parametrize("k", [2, 3])
def test_metrics_agree_with_the_task_metrics(k):
    """Same numbers as nluforge.tasks.metrics (sklearn/scipy) on the data as it is."""
    from nluforge.tasks.metrics import _FUNCS

    labels, preds = _classes(500, k, seed=k)
    for name in ("accuracy", "macro_f1", "mcc") + (("f1",) if k == 2 else ()):
        assert score(name, labels, preds) == pytest.approx(_FUNCS[name](preds, labels), abs=1e-12), name
    y = np.random.default_rng(0).normal(size=300).round(1)  # ties, as STS-B's labels have
    x = y + np.random.default_rng(1).normal(size=300)
    for name in ("pearson", "spearman"):
        assert score(name, y, x) == pytest.approx(_FUNCS[name](x, y), abs=1e-12), name


def test_metrics_per_resample_agree_with_a_loop():
    labels, preds = _classes(200, 3, seed=7)
    idx = resample_index(200)[:20]
    for name in ("accuracy", "mcc", "macro_f1"):
        vectorized = METRICS[name](labels, preds, idx)
        looped = [score(name, labels[i], preds[i]) for i in idx]
        np.testing.assert_allclose(vectorized, looped, atol=1e-12)


def test_a_constant_classifier_has_the_binomial_interval():
    """Predicting class 1 on 70% class-1 labels: accuracy .7, interval about ±1.96·sqrt(.21/n)."""
    n = 1000
    labels = np.array([1] * 700 + [0] * 300)
    ev = bootstrap("accuracy", [Eval(labels, np.ones(n, dtype=int))])
    assert ev.point == pytest.approx(0.7)
    assert ev.half_width == pytest.approx(1.96 * np.sqrt(0.21 / n), rel=0.15)
    assert ev.lo < 0.7 < ev.hi
    assert ev.method == "bootstrap" and len(ev.replicates) == N_RESAMPLES
    mcc = bootstrap("mcc", [Eval(labels, np.ones(n, dtype=int))])  # no correlation in any resample
    assert (mcc.point, mcc.lo, mcc.hi) == (0.0, 0.0, 0.0)
    perfect = bootstrap("accuracy", [Eval(labels, labels)])
    assert (perfect.lo, perfect.hi) == (1.0, 1.0)


def test_intervals_cover_the_true_accuracy_95_percent_of_the_time():
    """200 simulated evaluations of a classifier whose true accuracy is .8: ~95% of intervals hold it."""
    rng = np.random.default_rng(123)
    n, true = 400, 0.8
    hits = 0
    for i in range(200):
        labels = rng.integers(0, 2, n)
        right = rng.random(n) < true
        ev = bootstrap("accuracy", [Eval(labels, np.where(right, labels, 1 - labels))], seed=i)
        hits += ev.lo <= true <= ev.hi
    assert 0.90 <= hits / 200 <= 0.99, hits  # binomial sd of the rate: 1.5 points


def test_several_seeds_widen_the_interval_by_their_spread():
    labels, _ = _classes(600, 2, seed=3)
    rng = np.random.default_rng(4)
    runs = [Eval(labels, np.where(rng.random(600) < acc, labels, 1 - labels)) for acc in (0.7, 0.8, 0.9)]
    together = bootstrap("accuracy", runs)
    alone = bootstrap("accuracy", runs[1:2])
    assert together.method == "seeds+bootstrap" and len(together.seed_scores) == 3
    assert together.half_width > 2 * alone.half_width  # the seeds disagree by 10 points
    assert together.point == pytest.approx(np.mean(together.seed_scores))


def _flip(labels: np.ndarray, preds: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``preds`` with ``k`` right answers turned wrong."""
    out = preds.copy()
    right = np.flatnonzero(out == labels)
    pick = np.random.default_rng(seed).choice(right, k, replace=False)
    out[pick] = 1 - labels[pick]
    return out


@pytest.mark.parametrize("metric", ["accuracy", "f1", "mcc"])
def test_the_paired_test_finds_a_planted_difference(metric):
    labels, preds = _classes(872, 2, seed=11)
    worse = _flip(labels, preds, 40, seed=1)  # 4.6 points of accuracy
    a, b = bootstrap(metric, [Eval(labels, preds)]), bootstrap(metric, [Eval(labels, worse)])
    result = compare(metric, a, b)
    assert result.diff > 0 and result.p < 1e-4
    assert result.test == ("McNemar" if metric == "accuracy" else "paired bootstrap")
    slight = compare(metric, a, bootstrap(metric, [Eval(labels, _flip(labels, preds, 2, seed=2))]))
    assert slight.p > 0.05  # 2 examples of 872 are noise


@pytest.mark.parametrize("metric", ["accuracy", "f1", "pearson"])
def test_identical_predictions_are_never_different(metric):
    labels, preds = _classes(300, 2, seed=5)
    a = bootstrap(metric, [Eval(labels, preds)])
    b = bootstrap(metric, [Eval(labels.copy(), preds.copy())])
    result = compare(metric, a, b)
    assert result.diff == 0 and result.p == 1.0


def test_the_paired_test_is_stronger_than_overlapping_intervals():
    """Intervals overlap, yet the paired test sees that b loses on examples a gets right, never the reverse."""
    labels, preds = _classes(872, 2, seed=13)
    a = bootstrap("accuracy", [Eval(labels, preds)])
    b = bootstrap("accuracy", [Eval(labels, _flip(labels, preds, 18, seed=3))])
    assert b.hi > a.lo  # overlapping intervals
    assert compare("accuracy", a, b).p < 0.001


def test_seed_scores_alone_give_a_t_interval_and_a_welch_test():
    a, b = from_seeds([0.91, 0.92, 0.93]), from_seeds([0.80, 0.81, 0.82])
    assert a.half_width == pytest.approx(4.303 * 0.01 / np.sqrt(3), rel=1e-3)
    assert compare("accuracy", a, b).test == "Welch t over seeds" and compare("accuracy", a, b).p < 0.001
    one = from_seeds([0.9])
    assert one.lo is None and compare("accuracy", one, b).p is None


def test_mcnemar_is_the_exact_binomial_test():
    from scipy.stats import binomtest

    from nluforge.report.stats import mcnemar

    for only_a, only_b in ((0, 5), (3, 9), (20, 20), (1, 0), (40, 12)):
        a = np.array([True] * only_a + [False] * only_b + [True] * 7)
        b = np.array([False] * only_a + [True] * only_b + [True] * 7)
        expected = binomtest(only_a, only_a + only_b, 0.5).pvalue
        assert mcnemar(a, b) == pytest.approx(expected, rel=1e-9)


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5]) == [0.5] and holm([]) == []


def test_bootstrap_is_fast_for_fifty_variants():
    labels, _ = _classes(1000, 2, seed=9)
    rng = np.random.default_rng(10)
    evals = [Eval(labels, np.where(rng.random(1000) < 0.85, labels, 1 - labels)) for _ in range(50)]
    start = time.process_time()  # CPU time of this process: other jobs on the machine do not count
    evidence = [bootstrap(m, [e]) for e in evals for m in ("accuracy", "f1", "mcc")]
    pairs = [compare("accuracy", evidence[3 * i], evidence[3 * j]) for i in range(50) for j in range(i)]
    elapsed = time.process_time() - start
    assert len(pairs) == 1225 and elapsed < 3, elapsed
