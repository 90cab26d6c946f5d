""" "Recommended for your budget": sentences that name only Pareto-optimal variants.

For each cost axis, the front is read from the best variant down to the cheapest: every step trades
some score for a lower cost, and the sentence says how much of each, relative to the best variant on
that axis ("lora (r=8): 88.1 ± 0.3 accuracy (-3.9 points) with 0.65% of the trainable parameters of
full"). A dominated variant is never named.
"""

from __future__ import annotations

from nluforge.report.format import fmt_axis_value, fmt_ratio, fmt_stat
from nluforge.report.metrics import display_name
from nluforge.report.pareto import COST_AXES, ROBUST_PREFIX, CostAxis, cost_points, robust_points
from nluforge.report.tables import Recommendation, TaskReport, VariantRow


def _score(row: VariantRow, metric: str) -> str:
    stat = row.metrics.get(metric) or row.robust.get(metric)
    return f"{fmt_stat(stat)} {display_name(metric)}"


def best_overall(task: TaskReport) -> Recommendation | None:
    """The variant with the highest mean primary metric."""
    scored = [r for r in task.rows if r.score(task.primary) is not None]
    if not task.primary or not scored:
        return None
    best = max(scored, key=lambda r: r.score(task.primary) or 0.0)
    item = f"{best.label}: {_score(best, task.primary)} (n={best.n})"
    return Recommendation("Best overall", (item,), (best.key,))


def _trade(task: TaskReport, axis: CostAxis, row: VariantRow, ref: VariantRow) -> str:
    """One step down the front: the score given up and the share of the cost that remains."""
    metric = task.primary or ""
    delta = 100 * ((row.score(metric) or 0.0) - (ref.score(metric) or 0.0))
    cost, ref_cost = row.cost[axis.field], ref.cost[axis.field]
    share = f"{fmt_ratio(cost / ref_cost)} of {axis.noun} of {ref.label}" if ref_cost > 0 else axis.noun
    absolute = fmt_axis_value(axis.field, cost) + axis.unit
    change = f"{delta:+.1f}".replace("-", "\u2212")  # a typographic minus
    return f"{row.label}: {_score(row, metric)} ({change} points) with {share} ({absolute})"


def budget(task: TaskReport, axis: CostAxis) -> Recommendation | None:
    """The front on one cost axis, best first; None unless two variants have that cost measured."""
    points = cost_points(task.rows, task.primary, axis.field)
    front = sorted(task.frontiers.get(axis.name, ()), key=lambda k: -points[k][0])
    if len(points) < 2:  # nothing to compare
        return None
    ref, cheaper = task.row(front[0]), [task.row(k) for k in front[1:]]
    if not cheaper:
        value = fmt_axis_value(axis.field, ref.cost[axis.field]) + axis.unit
        items: tuple[str, ...] = (f"{ref.label} {axis.cheapest} ({value}): no variant trades score for less",)
    else:
        items = tuple(_trade(task, axis, row, ref) for row in cheaper)
    return Recommendation(axis.heading, items, tuple(front))


def robustness(task: TaskReport, name: str) -> Recommendation | None:
    """The clean-vs-robust front, most robust first."""
    points = robust_points(task.rows, task.clean_metric, name)
    front = sorted(task.frontiers.get(ROBUST_PREFIX + name, ()), key=lambda k: -points[k][1])
    if not front or not task.clean_metric:
        return None
    clean = display_name(task.clean_metric)
    items = tuple(
        f"{r.label}: {fmt_stat(r.robust[name])} {name} (clean {fmt_stat(r.metrics[task.clean_metric])} {clean})"
        for r in map(task.row, front)
    )
    return Recommendation(f"Robustness ({name})", items, tuple(front))


def recommend(task: TaskReport) -> list[Recommendation]:
    """Best overall, then the front for each cost budget, then robustness where measured."""
    found = [
        best_overall(task),
        *(budget(task, axis) for axis in COST_AXES),
        *(robustness(task, name) for name in task.robust_names),
    ]
    return [r for r in found if r is not None]
