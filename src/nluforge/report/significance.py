"""Which differences in a task are real: every pair of variants, and each variant against the majority
baseline, tested on the primary metric and corrected for the number of comparisons (Holm 1979).

Two families are corrected separately: the pairs of variants (what "best" and the budget lines rest
on) and the variants against the majority baseline (what "learned something" rests on). A variant is a
*candidate* for a recommendation when it is not degenerate and, where the baseline could be tested,
scores significantly above it. The advice for variants that cannot be told apart is read from the
data: the standard error of their difference gives the minimum detectable difference for this n,
and how many examples the observed difference would need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

from nluforge.report.stats import ALPHA, Comparison, compare, detectable_difference, holm
from nluforge.report.tables import TaskReport, VariantRow


@dataclass
class Significance:
    """Tests of one task's primary metric; p-values are Holm-adjusted within their family."""

    metric: str | None
    alpha: float = ALPHA
    pairs: dict[tuple[str, str], Comparison] = field(default_factory=dict)  # (a, b): a - b
    adjusted: dict[tuple[str, str], float | None] = field(default_factory=dict)
    vs_baseline: dict[str, Comparison] = field(default_factory=dict)  # key: variant - majority
    adjusted_baseline: dict[str, float | None] = field(default_factory=dict)

    def test(self, a: str, b: str) -> tuple[Comparison, float | None] | None:
        """The comparison of ``a`` against ``b`` (diff = a - b) and its adjusted p; None if untested."""
        if (a, b) in self.pairs:
            return self.pairs[(a, b)], self.adjusted[(a, b)]
        if (b, a) in self.pairs:
            c = self.pairs[(b, a)]
            return Comparison(-c.diff, c.p, c.test, c.se), self.adjusted[(b, a)]
        return None

    def better(self, a: str, b: str) -> bool:
        """``a`` scores significantly higher than ``b``."""
        found = self.test(a, b)
        return found is not None and found[1] is not None and found[1] < self.alpha and found[0].diff > 0

    def above_baseline(self, key: str) -> bool | None:
        """Significantly above the majority baseline; None when that could not be tested."""
        p = self.adjusted_baseline.get(key)
        if p is None:
            return None
        return p < self.alpha and self.vs_baseline[key].diff > 0

    @property
    def n_pairs(self) -> int:
        return len(self.pairs)


def _adjust(comparisons: dict, alpha: float) -> dict:
    tested = [k for k, c in comparisons.items() if c.p is not None]
    adjusted = dict(zip(tested, holm([comparisons[k].p for k in tested]), strict=True))
    return {k: adjusted.get(k) for k in comparisons}


def test_task(task: TaskReport, alpha: float = ALPHA) -> Significance:
    """Every pair of variants with a primary score, and each against the majority baseline."""
    metric = task.primary
    sig = Significance(metric, alpha)
    rows = [r for r in task.rows if r.stat(metric) is not None and r.stat(metric).evidence is not None]
    for a, b in combinations(rows, 2):
        sig.pairs[(a.key, b.key)] = compare(metric or "", a.stat(metric).evidence, b.stat(metric).evidence)
    sig.adjusted = _adjust(sig.pairs, alpha)
    base = next((b for b in task.baselines if b.kind == "majority"), None)
    base_ev = base.metrics[metric].evidence if base and metric in base.metrics else None
    if base_ev is not None:
        for r in rows:
            sig.vs_baseline[r.key] = compare(metric or "", r.stat(metric).evidence, base_ev)
        sig.adjusted_baseline = _adjust(sig.vs_baseline, alpha)
    return sig


def is_candidate(task: TaskReport, row: VariantRow) -> bool:
    """May be recommended: has a score, is not degenerate, and is not shown to be no better than the
    majority baseline."""
    if row.degenerate or row.score(task.primary) is None:
        return False
    return task.significance is None or task.significance.above_baseline(row.key) is not False


def candidates(task: TaskReport) -> list[VariantRow]:
    """The recommendable rows, best primary score first."""
    return [r for r in task.rows if is_candidate(task, r)]


def tied_with_best(task: TaskReport) -> list[VariantRow]:
    """The best candidate and every candidate not significantly below it."""
    rows = candidates(task)
    if not rows:
        return []
    top = rows[0]
    return [top] + [r for r in rows[1:] if not task.significance.better(top.key, r.key)]


def _points(value: float) -> str:
    return f"{100 * abs(value):.1f} points"


def separation_advice(task: TaskReport, a: VariantRow, b: VariantRow) -> str:
    """What would tell ``a`` and ``b`` apart, from the data: examples, seeds or training."""
    sig: Significance = task.significance
    found = sig.test(a.key, b.key)
    if found is None or found[0].p is None:
        return (
            "no test was possible: save per-example predictions (eval.save_predictions) or run "
            "at least 2 seeds of each"
        )
    comp, _ = found
    advice = []
    tested = [sig.above_baseline(a.key), sig.above_baseline(b.key)]
    if False in tested:  # one was tested against the majority baseline and is not clearly above it
        advice.append("more training (not all of them are clearly above the majority baseline)")
    if comp.se and comp.se > 0:
        m = max(1, sig.n_pairs)  # Holm's strictest threshold, alpha / m: a conservative detectable size
        mdd = detectable_difference(comp.se, sig.alpha / m)
        n = (a.stat(task.primary).evidence.n_examples if a.stat(task.primary) else None) or 0
        if abs(comp.diff) > 1e-9 and n:
            need = math.ceil(n * (mdd / abs(comp.diff)) ** 2)
            advice.append(
                f"more evaluation examples: the observed difference of {_points(comp.diff)} needs about "
                f"{need:,} examples to be detected (n = {n:,} now detects {_points(mdd)})"
            )
        elif n:
            advice.append(f"nothing at this n: their scores are equal (n = {n:,} detects {_points(mdd)})")
    seeds = min(len(a.seeds), len(b.seeds))
    if seeds < 2:
        advice.append("more seeds (one seed shows nothing of the seed-to-seed spread)")
    elif comp.test.startswith("Welch"):
        advice.append(
            f"more seeds ({seeds} now: an interval over seeds alone narrows as 1/√seeds), or saved "
            "per-example predictions for a paired test"
        )
    else:
        spread = max(a.stat(task.primary).std or 0.0, b.stat(task.primary).std or 0.0)
        if comp.se and spread > comp.se:
            advice.append(
                f"more seeds (the spread between seeds, {_points(spread)}, exceeds the standard error "
                f"of the difference, {_points(comp.se)}, with {seeds} seeds)"
            )
    return "; ".join(advice) or "more evaluation examples or more seeds"
