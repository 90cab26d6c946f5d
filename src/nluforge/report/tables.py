"""The per-task tables: runs of one variant grouped over seeds into one row, mean and 95% interval.

A metric's interval comes from the runs' per-example predictions (a bootstrap, see ``stats``) where
every run saved them, else from the spread of the seeds (a t interval), else there is none. Metric
values stay fractions here (the renderers show them in %). Costs are averaged over the runs that
measured them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nluforge.report.collect import RunRecord
from nluforge.report.metrics import ADVGLUE_NAME, primary_metric, split_of
from nluforge.report.stats import METRICS, REGRESSION, Evidence, bootstrap, from_seeds
from nluforge.report.variants import label_variants


@dataclass(frozen=True)
class Stat:
    """Mean over seeds, sample std over seeds (None for one run), and the 95% interval (lo, hi) when
    one could be had; ``evidence`` keeps what the significance tests need."""

    mean: float
    std: float | None
    n: int
    lo: float | None = None
    hi: float | None = None
    evidence: Evidence | None = field(default=None, repr=False, compare=False)

    @property
    def half_width(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        """From seed scores alone: a t interval over seeds (none for a single seed)."""
        return cls.from_evidence(from_seeds(values)) if values else None

    @classmethod
    def from_evidence(cls, ev: Evidence) -> Stat:
        std = statistics.stdev(ev.seed_scores) if len(ev.seed_scores) > 1 else None
        return cls(ev.point, std, len(ev.seed_scores), ev.lo, ev.hi, ev)


@dataclass
class VariantRow:
    """One variant of a task: its label, the seeds it ran with, and its aggregated numbers."""

    key: str
    label: str
    method: str
    config: dict[str, Any]  # the config of the first run (seed and run-only fields vary)
    seeds: list[int | None]
    run_ids: list[str]
    metrics: dict[str, Stat]  # clean dev metrics
    robust: dict[str, Stat]
    cost: dict[str, float]  # mean of each measured numeric cost field
    parent_key: str | None = None  # a derived variant's parent variant
    step: str | None = None  # the derived step, e.g. "compress:int8_dynamic"
    degenerate: str | None = None  # "predicts one class", "predicts a constant"
    flags: list[str] = field(default_factory=list)  # other warnings, in words

    @property
    def n(self) -> int:
        return len(self.run_ids)

    def score(self, metric: str | None) -> float | None:
        stat = self.stat(metric)
        return stat.mean if stat else None

    def stat(self, metric: str | None) -> Stat | None:
        return self.metrics.get(metric or "") or self.robust.get(metric or "")


@dataclass(frozen=True)
class Recommendation:
    """One entry of "Recommended for your budget": a heading, one clause per variant it names."""

    heading: str
    items: tuple[str, ...]  # "lora (r=8): 88.1 ± 0.3 accuracy (−3.9 points) with 0.65% of ..."
    variants: tuple[str, ...]  # variant keys, Pareto-optimal ones only

    @property
    def text(self) -> str:
        return "; ".join(self.items) + "."


@dataclass
class TaskReport:
    """Everything the report says about one task."""

    task: str
    primary: str | None  # the headline metric (None when no run has a dev metric)
    metric_names: list[str]  # primary first
    robust_names: list[str]
    rows: list[VariantRow]  # best primary metric first
    frontiers: dict[str, set[str]] = field(default_factory=dict)  # axis -> optimal keys (significant steps)
    noise: dict[str, set[str]] = field(default_factory=dict)  # axis -> keys dominated only within noise
    recommendations: list[Recommendation] = field(default_factory=list)
    baselines: list[Any] = field(default_factory=list)  # baselines.BaselineRow, majority first
    significance: Any = None  # significance.Significance over the primary metric
    evals: list[Any] = field(default_factory=list)  # evals.EvalRow

    @property
    def clean_metric(self) -> str | None:
        """The clean metric to set against robust accuracy: accuracy where measured, else the primary."""
        return "accuracy" if "accuracy" in self.metric_names else self.primary

    def row(self, key: str) -> VariantRow:
        return next(r for r in self.rows if r.key == key)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mean_cost(runs: list[RunRecord]) -> dict[str, float]:
    names = list(dict.fromkeys(n for r in runs for n in r.costs))
    return {n: statistics.fmean(r.costs[n] for r in runs if n in r.costs) for n in names}


def _metric_stat(name: str, runs: list[RunRecord]) -> Stat | None:
    """Bootstrap when every run has predictions for the metric's split, else seeds alone."""
    base, suffix = split_of(name)
    evals = [r.predictions.get(suffix) for r in runs]
    if base in METRICS and evals and all(e is not None for e in evals):
        return Stat.from_evidence(bootstrap(base, evals))
    return Stat.of([r.metrics[name] for r in runs if name in r.metrics])


def _stats(runs: list[RunRecord], attr: str) -> dict[str, Stat]:
    names = list(dict.fromkeys(n for r in runs for n in getattr(r, attr)))
    if attr == "robust":
        return {n: stat for n in names if (stat := Stat.of([r.robust[n] for r in runs if n in r.robust]))}
    return {n: stat for n in names if (stat := _metric_stat(n, runs))}


def degenerate(runs: list[RunRecord], regression: bool) -> tuple[str | None, list[str]]:
    """ "predicts one class" when every run with predictions predicts one value on its dev split;
    a note when only some seeds collapsed."""
    collapsed = [len(set(e.preds.tolist())) == 1 for r in runs if (e := r.predictions.get("")) is not None]
    what = "predicts a constant" if regression else "predicts one class"
    if collapsed and all(collapsed):
        return what, []
    if any(collapsed):
        return None, [f"{what} in {sum(collapsed)} of {len(collapsed)} seeds"]
    return None, []


def aggregate(key: str, label: str, runs: list[RunRecord], regression: bool = False) -> VariantRow:
    """Fold the runs of one variant (different seeds) into a row."""
    bad, notes = degenerate(runs, regression)
    return VariantRow(
        key=key,
        label=label,
        method=str(runs[0].config.get("method", "?")),
        config=runs[0].config,
        seeds=[r.seed for r in runs],
        run_ids=[r.run_id for r in runs],
        metrics=_stats(runs, "metrics"),
        robust=_stats(runs, "robust"),
        cost=_mean_cost(runs),
        step=runs[0].step,
        degenerate=bad,
        flags=notes,
    )


def _ordered_names(rows: list[VariantRow], attr: str, first: str | None = None) -> list[str]:
    names = list(dict.fromkeys(n for r in rows for n in getattr(r, attr)))
    head = [n for n in (first,) if n in names]
    return head + [n for n in names if n not in head]


def task_table(task: str, runs: list[RunRecord], labels: Mapping[str, str] | None = None) -> TaskReport:
    """Group the completed runs of one task by variant, best primary metric first.

    ``labels`` (variant key -> label) lets the caller label variants over more runs (failed ones too).
    """
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    labels = labels or label_variants({k: g[0].config for k, g in groups.items()})
    names = list(dict.fromkeys(n for r in runs for n in r.metrics))
    primary = primary_metric(task, names)
    regression = split_of(primary or "")[0] in REGRESSION
    rows = [
        aggregate(k, labels[k], sorted(g, key=lambda r: (r.seed is None, r.seed)), regression)
        for k, g in groups.items()
    ]
    rows.sort(key=lambda r: (-(r.score(primary) if r.score(primary) is not None else float("-inf")), r.label))
    return TaskReport(
        task=task,
        primary=primary,
        metric_names=_ordered_names(rows, "metrics", primary),
        robust_names=_ordered_names(rows, "robust", ADVGLUE_NAME),
        rows=rows,
    )
