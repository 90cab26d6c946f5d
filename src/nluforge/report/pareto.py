"""Pareto fronts that respect noise: the variants worth paying for, on each cost axis.

On means alone, a variant is dominated when another one scores at least as high at no more cost, and
is strictly better on one of the two (:func:`pareto_front`). With intervals, the front is built from
the cheapest candidate up: a costlier variant joins it only when it scores *significantly* higher than
the front so far (Holm-corrected tests, ``significance``). Each step of that front is a real trade.
The rest are either clearly dominated (a variant at no more cost scores significantly higher) or
*dominated only within noise*: not worth recommending on this data, but not shown to be worse.
Degenerate variants and those not above the majority baseline are never on a front.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nluforge.report.significance import candidates
from nluforge.report.tables import TaskReport, VariantRow


@dataclass(frozen=True)
class CostAxis:
    """One cost a user may be budgeting: a ``Cost`` field and how to talk about it."""

    name: str  # short id, used in plot file names
    field: str  # the results.schema.Cost field
    heading: str  # the recommendation's heading
    title: str  # the plot's x-axis title
    noun: str  # "with 3% of {noun} of full"
    cheapest: str  # "full {cheapest}"
    unit: str  # appended to absolute values in sentences
    log: bool  # plot on a log scale


COST_AXES = (
    CostAxis(
        "params",
        "trainable_params",
        "Trainable-parameter budget",
        "trainable parameters",
        "the trainable parameters",
        "also has the fewest trainable parameters",
        " params",
        log=True,
    ),
    CostAxis(
        "memory",
        "peak_memory_mb",
        "Training-memory budget",
        "peak training memory (MB)",
        "the peak training memory",
        "also uses the least training memory",
        " MB",
        log=False,
    ),
    CostAxis(
        "latency",
        "latency_ms_bs1",
        "Latency budget",
        "latency at batch 1 (ms/example)",
        "the batch-1 latency",
        "is also the fastest",
        " ms/example",
        log=False,
    ),
    CostAxis(
        "size",
        "standalone_size_mb",
        "Disk budget (servable model)",
        "standalone size (MB)",
        "the standalone size",
        "is also the smallest servable model",
        " MB",
        log=False,
    ),
    CostAxis(
        "delta",
        "delta_size_mb",
        "Disk budget on top of the base model",
        "size on top of the base model (MB)",
        "the size to ship on top of the base model",
        "also ships the least on top of the base model",
        " MB",
        log=True,
    ),
)
ROBUST_PREFIX = "robust:"  # frontier names for clean-vs-robust fronts: "robust:AdvGLUE acc"


def pareto_front(points: Mapping[str, tuple[float, float]]) -> set[str]:
    """Keys of the points ``(cost, score)`` that no other point dominates (lower cost, higher score)."""

    def dominated(cost: float, score: float) -> bool:
        return any(c <= cost and s >= score and (c < cost or s > score) for c, s in points.values())

    return {key for key, (cost, score) in points.items() if not dominated(cost, score)}


def cost_points(rows: list[VariantRow], metric: str | None, field: str) -> dict[str, tuple[float, float]]:
    """``key -> (cost, score)`` for the rows that have both."""
    return {r.key: (r.cost[field], s) for r in rows if field in r.cost and (s := r.score(metric)) is not None}


def robust_points(rows: list[VariantRow], clean: str | None, robust: str) -> dict[str, tuple[float, float]]:
    """``key -> (clean score, robust score)`` for the rows that have both."""
    return {
        r.key: (c, s)
        for r in rows
        if (c := r.score(clean)) is not None and (s := r.score(robust)) is not None
    }


def robust_front(points: Mapping[str, tuple[float, float]]) -> set[str]:
    """The front when both coordinates are to be maximised (clean and robust accuracy)."""
    return pareto_front({k: (-clean, robust) for k, (clean, robust) in points.items()})


def significant_front(
    task: TaskReport, points: Mapping[str, tuple[float, float]]
) -> tuple[list[str], set[str]]:
    """``(front, within_noise)`` on one axis: the front cheapest first, each step significantly better
    than the one before; and the keys dominated only within noise (see the module docstring)."""
    sig = task.significance
    order = sorted(points, key=lambda k: (points[k][0], -points[k][1], k))
    front: list[str] = []
    for key in order:
        if not front or (points[key][0] > points[front[-1]][0] and sig.better(key, front[-1])):
            front.append(key)
    rest = [k for k in order if k not in front]
    clearly = {
        k for k in rest if any(points[w][0] <= points[k][0] and sig.better(w, k) for w in points if w != k)
    }
    return front, set(rest) - clearly


def frontiers(task: TaskReport) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The optimal variant keys of a task per cost axis and per robust metric, and per cost axis those
    dominated only within noise. Only candidates (``significance.candidates``) are placed."""
    rows = candidates(task)
    out, noise = {}, {}
    for axis in COST_AXES:
        front, within = significant_front(task, cost_points(rows, task.primary, axis.field))
        out[axis.name], noise[axis.name] = set(front), within
    for name in task.robust_names:
        out[ROBUST_PREFIX + name] = robust_front(robust_points(rows, task.clean_metric, name))
    keep = lambda d: {name: keys for name, keys in d.items() if keys}  # noqa: E731
    return keep(out), keep(noise)
