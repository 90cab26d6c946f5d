"""Pareto fronts: the variants no other variant beats on both quality and cost.

A variant is dominated when another one scores at least as high at no more cost, and is strictly
better on one of the two. Only the rest is worth recommending: for any budget on that cost axis, the
best choice is on the front. Scores are means over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
        "model_size_mb",
        "Disk budget",
        "size on disk (MB)",
        "the size on disk",
        "is also the smallest on disk",
        " MB",
        log=False,
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


def frontiers(task: TaskReport) -> dict[str, set[str]]:
    """The Pareto-optimal variant keys of a task, per cost axis and per robust metric."""
    out = {axis.name: pareto_front(cost_points(task.rows, task.primary, axis.field)) for axis in COST_AXES}
    for name in task.robust_names:
        out[ROBUST_PREFIX + name] = robust_front(robust_points(task.rows, task.clean_metric, name))
    return {name: keys for name, keys in out.items() if keys}
