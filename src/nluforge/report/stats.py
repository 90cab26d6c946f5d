"""Signal or noise: task metrics recomputed per bootstrap resample, intervals, paired tests, Holm.

Everything is numpy over a matrix of resampled example indices, ``(B, n)``, so one call scores a
variant on all B resamples at once (no Python loop over resamples).

- Intervals: the percentile bootstrap over evaluation examples (Efron & Tibshirani 1993, *An
  Introduction to the Bootstrap*, ch. 13). With several seeds, a two-level (hierarchical) bootstrap:
  each replicate draws seeds with replacement and examples with replacement, so the interval holds both
  the seed-to-seed and the example-to-example variation.
- Paired comparisons of two variants on the same examples: the paired bootstrap (Koehn 2004,
  "Statistical significance tests for machine translation evaluation"; Dror et al. 2018, "The
  Hitchhiker's guide to testing statistical significance in NLP"), and McNemar's exact test (McNemar
  1947) for accuracy with one seed each.
- Many comparisons: Holm's step-down correction (Holm 1979).

Departures: the paired-bootstrap p-value is read from the bootstrap standard error of the difference
(a normal approximation), not from counting resamples; counting cannot go below 1/B, which Holm's
threshold (alpha / number of comparisons) can, and then no difference would ever be significant.
Resample indices depend only on ``n`` and a fixed seed, so two variants scored on the same examples
see the same resamples: their replicate arrays are paired by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

N_RESAMPLES = 1000
RESAMPLE_SEED = 20261130
ALPHA = 0.05
CONFIDENCE = 0.95
Z_POWER_80 = 0.8416  # z of 80% power, for the minimum detectable difference

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (labels, preds, idx (B, n)) -> (B,)


@lru_cache(maxsize=16)
def resample_index(n: int, b: int = N_RESAMPLES, seed: int = RESAMPLE_SEED) -> np.ndarray:
    """``(b, n)`` example indices drawn with replacement; the same for every call with this n."""
    return np.random.default_rng([seed, n]).integers(0, n, size=(b, n))


def full_index(n: int) -> np.ndarray:
    """The identity 'resample' ``(1, n)``: the metric on the data as it is."""
    return np.arange(n)[None, :]


# --- task metrics, vectorized over resamples ----------------------------------------------------------


def _share(mask: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return mask[idx].mean(axis=1)


def accuracy(labels: np.ndarray, preds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return _share(labels == preds, idx)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (sklearn's zero_division=0)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _f1_of(labels: np.ndarray, preds: np.ndarray, idx: np.ndarray, cls) -> np.ndarray:
    tp = ((preds == cls) & (labels == cls))[idx].sum(axis=1)
    fp = ((preds == cls) & (labels != cls))[idx].sum(axis=1)
    fn = ((preds != cls) & (labels == cls))[idx].sum(axis=1)
    return _safe_div(2.0 * tp, 2.0 * tp + fp + fn)


def f1(labels: np.ndarray, preds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Binary F1 of class 1, as GLUE scores MRPC and QQP."""
    return _f1_of(labels, preds, idx, 1)


def macro_f1(labels: np.ndarray, preds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Unweighted mean F1 over the classes seen in the full labels or predictions (as sklearn)."""
    classes = np.union1d(labels, preds)
    return np.mean([_f1_of(labels, preds, idx, c) for c in classes], axis=0)


def mcc(labels: np.ndarray, preds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Matthews correlation, multiclass form (Gorodkin 2004, as sklearn); 0 when undefined."""
    classes = np.union1d(labels, preds)
    s = float(idx.shape[1])
    c = (labels == preds)[idx].sum(axis=1).astype(float)
    t = np.stack([(labels == k)[idx].sum(axis=1) for k in classes], axis=1).astype(float)  # (B, K)
    p = np.stack([(preds == k)[idx].sum(axis=1) for k in classes], axis=1).astype(float)
    num = c * s - (t * p).sum(axis=1)
    den = np.sqrt((s * s - (p * p).sum(axis=1)) * (s * s - (t * t).sum(axis=1)))
    return _safe_div(num, den)


def _corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of ``(B, n)`` arrays; 0 where a row is constant (tasks.metrics)."""
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    return _safe_div((xc * yc).sum(axis=1), np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1)))


def pearson(labels: np.ndarray, preds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return _corr(preds.astype(float)[idx], labels.astype(float)[idx])


def spearman(labels: np.ndarray, preds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Pearson of the ranks (ties averaged), ranked within each resample."""
    from scipy.stats import rankdata

    return _corr(rankdata(preds.astype(float)[idx], axis=1), rankdata(labels.astype(float)[idx], axis=1))


METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "acc": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": mcc,
    "matthews_correlation": mcc,
    "pearson": pearson,
    "pearsonr": pearson,
    "spearman": spearman,
    "spearmanr": spearman,
}
REGRESSION = frozenset({"pearson", "pearsonr", "spearman", "spearmanr"})


def score(metric: str, labels: Sequence, preds: Sequence) -> float:
    """One metric on the data as it is (no resampling)."""
    y, p = np.asarray(labels), np.asarray(preds)
    return float(METRICS[metric](y, p, full_index(len(y)))[0])


# --- evidence per variant -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Eval:
    """One run's predictions on one split: what the bootstrap resamples."""

    labels: np.ndarray  # (n,)
    preds: np.ndarray  # (n,)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def fingerprint(self) -> tuple[int, int]:
        """Equal for two runs evaluated on the same examples (same labels in the same order)."""
        return self.n, hash(self.labels.tobytes())


@dataclass(frozen=True)
class Evidence:
    """A variant's score on one metric with its uncertainty.

    ``replicates`` (B,) are the bootstrap values when predictions were read; ``seed_scores`` are the
    per-seed scores (from predictions, or from ``result.json`` when there are none).
    """

    point: float
    lo: float | None
    hi: float | None
    method: str  # "bootstrap" | "seeds+bootstrap" | "seeds (t)" | "none"
    seed_scores: tuple[float, ...]
    n_examples: int | None = None
    fingerprint: tuple[int, int] | None = None
    replicates: np.ndarray | None = field(default=None, repr=False, compare=False)
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)  # (n,) bool, one seed

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap(metric: str, evals: Sequence[Eval], seed: int = RESAMPLE_SEED) -> Evidence:
    """The interval of ``metric`` over the runs (seeds) of a variant, from their predictions.

    One seed: resample examples. Several: per replicate, draw seeds with replacement and average their
    scores on the same resampled examples (runs on different example sets keep their own resamples).
    """
    fn = METRICS[metric]
    points = [float(fn(e.labels, e.preds, full_index(e.n))[0]) for e in evals]
    per_seed = np.stack([fn(e.labels, e.preds, resample_index(e.n)) for e in evals])  # (S, B)
    s, b = per_seed.shape
    if s == 1:
        replicates, method = per_seed[0], "bootstrap"
    else:
        pick = np.random.default_rng([seed, s]).integers(0, s, size=(b, s))  # (B, S) seeds per replicate
        replicates, method = per_seed[pick, np.arange(b)[:, None]].mean(axis=1), "seeds+bootstrap"
    lo, hi = _percentiles(replicates)
    first = evals[0]
    same = all(e.fingerprint == first.fingerprint for e in evals)
    return Evidence(
        point=float(np.mean(points)),
        lo=min(lo, float(np.mean(points))),
        hi=max(hi, float(np.mean(points))),
        method=method,
        seed_scores=tuple(points),
        n_examples=first.n,
        fingerprint=first.fingerprint if same else None,
        replicates=replicates,
        correct=(first.labels == first.preds) if s == 1 else None,
    )


def from_seeds(values: Sequence[float]) -> Evidence:
    """Without predictions: a t interval over seed scores (none for a single seed)."""
    from scipy import stats

    mean = float(np.mean(values))
    if len(values) < 2:
        return Evidence(mean, None, None, "none", tuple(values))
    half = float(
        stats.t.ppf(0.5 + CONFIDENCE / 2, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
    )
    return Evidence(mean, mean - half, mean + half, "seeds (t)", tuple(float(v) for v in values))


# --- comparisons ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A two-sided test of ``a`` against ``b``: ``diff`` = a - b, ``p`` None when no test applies."""

    diff: float
    p: float | None
    test: str  # "McNemar" | "paired bootstrap" | "bootstrap (unpaired)" | "Welch t over seeds" | "none"
    se: float | None  # standard error of the difference, where known


def _normal_p(diff: float, se: float) -> float:
    from scipy.stats import norm

    if se <= 0:
        return 1.0 if abs(diff) < 1e-12 else 0.0
    return float(2 * norm.sf(abs(diff) / se))


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar p-value: a two-sided binomial test (p = 1/2) on the examples exactly one of the
    two gets right. The binomial CDF ufunc, not ``scipy.stats.binomtest``: 100x faster, same value."""
    from scipy.special import bdtr

    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return 1.0
    return float(min(1.0, 2 * bdtr(min(only_a, only_b), only_a + only_b, 0.5)))


def compare(metric: str, a: Evidence, b: Evidence) -> Comparison:
    """Is ``a`` different from ``b``? The strongest test the evidence allows (see module docstring)."""
    diff = a.point - b.point
    if a.replicates is not None and b.replicates is not None:
        paired = a.fingerprint is not None and a.fingerprint == b.fingerprint
        if paired:
            se = float(np.std(a.replicates - b.replicates, ddof=1))
            if metric in ("accuracy", "acc") and a.correct is not None and b.correct is not None:
                return Comparison(diff, mcnemar(a.correct, b.correct), "McNemar", se)
            return Comparison(diff, _normal_p(diff, se), "paired bootstrap", se)
        se = float(math.hypot(np.std(a.replicates, ddof=1), np.std(b.replicates, ddof=1)))
        return Comparison(diff, _normal_p(diff, se), "bootstrap (unpaired)", se)
    if len(a.seed_scores) >= 2 and len(b.seed_scores) >= 2:
        from scipy.stats import ttest_ind

        va, vb = np.var(a.seed_scores, ddof=1), np.var(b.seed_scores, ddof=1)
        se = float(math.sqrt(va / len(a.seed_scores) + vb / len(b.seed_scores)))
        if se == 0:
            return Comparison(diff, _normal_p(diff, se), "Welch t over seeds", se)
        p = float(ttest_ind(a.seed_scores, b.seed_scores, equal_var=False).pvalue)
        return Comparison(diff, p, "Welch t over seeds", se)
    return Comparison(diff, None, "none", None)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: reject H_i at level alpha iff adjusted_i < alpha."""
    m = len(pvalues)
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


def detectable_difference(se: float, alpha: float = ALPHA) -> float:
    """The difference a two-sided test at ``alpha`` detects with 80% power, given its standard error."""
    from scipy.stats import norm

    return float((norm.isf(alpha / 2) + Z_POWER_80) * se)
