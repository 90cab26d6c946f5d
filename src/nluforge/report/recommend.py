""" "Recommended for your budget": sentences that name a variant only when the data justifies it.

"Best overall" names a variant only when it scores significantly above every other candidate
(Holm-corrected, ``significance``); otherwise it says which variants are indistinguishable and what
would separate them. Each budget line walks the noise-aware front (``pareto``) from the best variant
down to the cheapest: every step trades a significant amount of score for a lower cost, and the
sentence says how much of each ("lora (r=8): 88.1 ± 0.3 accuracy (−3.9 points) with 0.65% of the
trainable parameters of full"). A degenerate or dominated variant is never named.
"""

from __future__ import annotations

from nluforge.report.format import flags, fmt_axis_value, fmt_ratio, fmt_stat
from nluforge.report.metrics import display_name
from nluforge.report.pareto import COST_AXES, ROBUST_PREFIX, CostAxis, cost_points, robust_points
from nluforge.report.significance import candidates, separation_advice, tied_with_best
from nluforge.report.tables import Recommendation, TaskReport, VariantRow


def _score(row: VariantRow, metric: str) -> str:
    return f"{fmt_stat(row.stat(metric))} {display_name(metric)}"


def _names(rows: list[VariantRow]) -> str:
    labels = [r.label for r in rows]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def _no_candidate(task: TaskReport) -> str:
    """Why nothing can be recommended."""
    base = next((b for b in task.baselines if b.kind == "majority"), None)
    ref = f" (the {base.label} baseline scores {_score(base, task.primary or '')})" if base else ""
    if all(r.degenerate for r in task.rows):
        return f"none: every variant {task.rows[0].degenerate}{ref}; train longer, or check the learning rate and the data"
    return f"none: no variant is clearly above the majority baseline{ref}; more training would separate them"


def best_overall(task: TaskReport) -> Recommendation | None:
    """The best candidate when it is significantly above all others; else why none is named."""
    if not task.primary or not any(r.score(task.primary) is not None for r in task.rows):
        return None
    if not candidates(task):
        return Recommendation("Best overall", (_no_candidate(task),), ())
    tied = tied_with_best(task)
    best = tied[0]
    if len(tied) == 1:
        others = len(candidates(task)) - 1
        why = {0: "", 1: ", significantly above the other variant"}.get(
            others, f", significantly above the other {others} variants"
        )
        return Recommendation(
            "Best overall", (f"{best.label}: {_score(best, task.primary)} (n={best.n}){why}",), (best.key,)
        )
    sig = task.significance
    found = sig.test(tied[0].key, tied[1].key)
    verdict = (
        "cannot be compared on this data (no per-example predictions, fewer than 2 seeds)"
        if found is None or found[0].p is None
        else f"are indistinguishable on this data ({display_name(task.primary)}, α = {sig.alpha:g}, "
        f"Holm-corrected over {sig.n_pairs} comparison{'' if sig.n_pairs == 1 else 's'})"
    )
    text = (
        f"none named: {_names(tied)} {verdict}; what would separate {tied[0].label} and "
        f"{tied[1].label}: {separation_advice(task, tied[0], tied[1])}"
    )
    return Recommendation("Best overall", (text,), ())


def _trade(task: TaskReport, axis: CostAxis, row: VariantRow, ref: VariantRow) -> str:
    """One step down the front: the score given up and the share of the cost that remains."""
    metric = task.primary or ""
    delta = 100 * ((row.score(metric) or 0.0) - (ref.score(metric) or 0.0))
    cost, ref_cost = row.cost[axis.field], ref.cost[axis.field]
    share = f"{fmt_ratio(cost / ref_cost)} of {axis.noun} of {ref.label}" if ref_cost > 0 else axis.noun
    absolute = fmt_axis_value(axis.field, cost) + axis.unit
    change = f"{delta:+.1f}".replace("-", "\u2212")  # a typographic minus
    warn = "".join(f"; {flag}" for flag in flags(task, row))
    return f"{row.label}: {_score(row, metric)} ({change} points) with {share} ({absolute}{warn})"


def budget(task: TaskReport, axis: CostAxis) -> Recommendation | None:
    """The front on one cost axis, best first; None unless two candidates have that cost measured."""
    points = cost_points(candidates(task), task.primary, axis.field)
    front = sorted(task.frontiers.get(axis.name, ()), key=lambda k: -points[k][0])
    if len(points) < 2 or not front:
        return None
    ref, cheaper = task.row(front[0]), [task.row(k) for k in front[1:]]
    if not cheaper:
        value = fmt_axis_value(axis.field, ref.cost[axis.field]) + axis.unit
        costlier = any(points[k][0] > points[ref.key][0] for k in points if k != ref.key)
        tail = ": no costlier variant scores significantly higher on this data" if costlier else ""
        lead = (
            f"{ref.label} ({value})"
            if costlier
            else f"{ref.label} {axis.cheapest} of the {len(points)} recommendable variants (those above the "
            f"baseline) ({value}): no variant trades score for less"
        )
        items: tuple[str, ...] = (lead + tail,)
    else:
        items = tuple(_trade(task, axis, row, ref) for row in cheaper)
    return Recommendation(axis.heading, items, tuple(front))


def robustness(task: TaskReport, name: str) -> Recommendation | None:
    """The clean-vs-robust front, most robust first (means over seeds; no per-example test yet)."""
    points = robust_points(candidates(task), task.clean_metric, name)
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
