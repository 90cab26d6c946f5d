"""The per-task tables: runs of one variant grouped over seeds into one row, mean ± std.

Metric values stay fractions here (the renderers show them in %). Costs are averaged over the runs
that measured them.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nluforge.report.collect import RunRecord
from nluforge.report.metrics import ADVGLUE_NAME, primary_metric
from nluforge.report.variants import label_variants
from nluforge.results.schema import Cost

COST_FIELDS = tuple(Cost.__dataclass_fields__)


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation over seeds; ``std`` is None for a single run."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))


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
    cost: dict[str, float]  # mean of each measured numeric Cost field

    @property
    def n(self) -> int:
        return len(self.run_ids)

    def score(self, metric: str | None) -> float | None:
        stat = self.metrics.get(metric or "") or self.robust.get(metric or "")
        return stat.mean if stat else None


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
    frontiers: dict[str, set[str]] = field(default_factory=dict)  # axis name -> Pareto-optimal keys
    recommendations: list[Recommendation] = field(default_factory=list)

    @property
    def clean_metric(self) -> str | None:
        """The clean metric to set against robust accuracy: accuracy where measured, else the primary."""
        return "accuracy" if "accuracy" in self.metric_names else self.primary

    def row(self, key: str) -> VariantRow:
        return next(r for r in self.rows if r.key == key)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mean_cost(runs: list[RunRecord]) -> dict[str, float]:
    out = {}
    for name in COST_FIELDS:
        values = [float(v) for r in runs if _is_number(v := getattr(r.cost, name, None))]
        if values:
            out[name] = statistics.fmean(values)
    return out


def _stats(dicts: list[dict[str, float]]) -> dict[str, Stat]:
    names = list(dict.fromkeys(n for d in dicts for n in d))
    return {n: stat for n in names if (stat := Stat.of([d[n] for d in dicts if n in d]))}


def aggregate(key: str, label: str, runs: list[RunRecord]) -> VariantRow:
    """Fold the runs of one variant (different seeds) into a row."""
    return VariantRow(
        key=key,
        label=label,
        method=str(runs[0].config.get("method", "?")),
        config=runs[0].config,
        seeds=[r.seed for r in runs],
        run_ids=[r.run_id for r in runs],
        metrics=_stats([r.metrics for r in runs]),
        robust=_stats([r.robust for r in runs]),
        cost=_mean_cost(runs),
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
    rows = [
        aggregate(k, labels[k], sorted(g, key=lambda r: (r.seed is None, r.seed))) for k, g in groups.items()
    ]
    primary = primary_metric(task, _ordered_names(rows, "metrics"))
    rows.sort(key=lambda r: (-(r.score(primary) if r.score(primary) is not None else float("-inf")), r.label))
    return TaskReport(
        task=task,
        primary=primary,
        metric_names=_ordered_names(rows, "metrics", primary),
        robust_names=_ordered_names(rows, "robust", ADVGLUE_NAME),
        rows=rows,
    )
