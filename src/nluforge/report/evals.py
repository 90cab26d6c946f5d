"""Later evaluations (``RUN/evals/<name>.json``, written by ``nluforge eval``) as report rows.

A record holds ``name``, ``source`` (a task split or a user's file), ``n``, ``metrics`` and, when the
examples carry a grouping field, ``groups``: per value its ``n`` and metrics. The runs of one variant
(seeds) are averaged, metric by metric and group by group.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from nluforge.report.collect import RunRecord


@dataclass
class EvalRow:
    """One later evaluation of one variant, averaged over its runs."""

    label: str  # the variant
    name: str  # the evaluation's name
    source: str  # "task rte/validation", "file challenge.jsonl"
    n: int
    runs: int
    metrics: dict[str, float]
    group_field: str | None = None
    groups: dict[str, dict[str, float]] = field(default_factory=dict)  # value -> {"n": .., metric: ..}


def _source(source: Any) -> str:
    if not isinstance(source, dict):
        return "?"
    if source.get("kind") == "file":
        return f"file {source.get('file', '?')}"
    return f"task {source.get('task', '?')}" + (f"/{source['split']}" if source.get("split") else "")


def _mean(dicts: list[dict[str, Any]]) -> dict[str, float]:
    names = list(dict.fromkeys(k for d in dicts for k, v in d.items() if _number(v)))
    return {k: statistics.fmean(d[k] for d in dicts if _number(d.get(k))) for k in names}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def eval_rows(runs: list[RunRecord], labels: dict[str, str]) -> list[EvalRow]:
    """The later evaluations of a task's runs, one row per (variant, evaluation name)."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        for record in run.evals:
            grouped[(run.key, str(record["name"]))].append(record)
    rows = []
    for (key, name), records in sorted(grouped.items(), key=lambda kv: (kv[0][1], labels[kv[0][0]])):
        groups = [r["groups"] for r in records if isinstance(r.get("groups"), dict)]
        values = defaultdict(list)
        for g in groups:
            for value, scores in (g.get("values") or {}).items():
                values[str(value)].append(scores if isinstance(scores, dict) else {})
        rows.append(
            EvalRow(
                label=labels[key],
                name=name,
                source=_source(records[0].get("source")),
                n=int(records[0].get("n") or 0),
                runs=len(records),
                metrics=_mean([r["metrics"] for r in records]),
                group_field=str(groups[0].get("field")) if groups else None,
                groups={v: _mean(s) for v, s in values.items()},
            )
        )
    return rows
