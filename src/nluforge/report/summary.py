"""The whole report as data: an overview over tasks, then per task a table with baselines and
intervals, the significance tests, noise-aware fronts and recommendations, later evaluations, plus
the failed runs.

Renderers (HTML, Markdown, terminal) only format a :class:`Report`; all numbers are decided here.
A derived run (``run_info.parent``) is its own variant, ``<parent variant> → <step>``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nluforge.report.baselines import task_baselines
from nluforge.report.collect import RunRecord
from nluforge.report.evals import eval_rows
from nluforge.report.metrics import split_of
from nluforge.report.overview import Overview, findings, overview
from nluforge.report.pareto import frontiers
from nluforge.report.recommend import recommend
from nluforge.report.significance import test_task
from nluforge.report.stats import ALPHA, REGRESSION
from nluforge.report.tables import TaskReport, task_table
from nluforge.report.variants import label_variants


@dataclass(frozen=True)
class FailedRun:
    """A run that wrote ``status: failed``, with its error."""

    task: str
    label: str
    seed: int | None
    run_id: str
    error: str
    path: Path


@dataclass
class Report:
    """What ``nluforge report`` shows."""

    results_dir: Path
    tasks: list[TaskReport]
    failed: list[FailedRun]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files and why
    n_runs: int = 0  # result files read (completed and failed)
    overview: Overview | None = None  # one row per variant, one column per task (two tasks or more)
    findings: list[str] = field(default_factory=list)  # "what this run shows", significant findings only
    alpha: float = ALPHA
    generated: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def n_variants(self) -> int:
        return sum(len(t.rows) for t in self.tasks)


def _by_task(runs: list[RunRecord]) -> dict[str, list[RunRecord]]:
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[run.task].append(run)
    return dict(sorted(groups.items()))


def _failed(runs: list[RunRecord], labels: dict[str, str]) -> list[FailedRun]:
    """The failed runs among ``runs``, labelled like the variants they belong to."""
    failed = sorted((r for r in runs if r.status != "completed"), key=lambda r: (labels[r.key], r.seed or 0))
    return [
        FailedRun(r.task, labels[r.key], r.seed, r.run_id, r.error or "(no error message)", r.path)
        for r in failed
    ]


def derive(runs: list[RunRecord]) -> tuple[list[RunRecord], dict[str, str]]:
    """Key each derived run by its parent's variant and its step; the parent variant of each key.

    A derived run whose parent is not among ``runs`` keeps its own config as the parent part."""
    by_dir = {r.dir_name: r for r in runs}
    by_dir.update({r.run_id: r for r in runs})
    out, parents = [], {}
    for run in runs:
        if not run.parent:
            out.append(run)
            continue
        parent = by_dir.get(run.parent)
        base = parent.key if parent else run.key
        key = f"{base} → {run.step or 'derived'}"
        out.append(replace(run, key=key))
        parents[key] = base
    return out, parents


def _labels(runs: list[RunRecord], parents: dict[str, str], configs: dict[str, Any]) -> dict[str, str]:
    """Plain variants labelled from configs; a derived one as ``<parent label> → <step>``."""
    plain = {r.key: r.config for r in runs if r.key not in parents}
    derived = sorted({r.key for r in runs if r.key in parents}, key=len)  # parents before children
    extra = {
        parents[k]: configs[parents[k]] for k in derived if parents[k] not in plain and parents[k] in configs
    }
    labels = label_variants({**plain, **extra})
    for key in derived:
        step = key.rsplit(" → ", 1)[1]
        labels[key] = f"{labels.get(parents[key], '?')} → {step}"
    return labels


def _task_report(
    name: str, completed: list[RunRecord], labels: dict[str, str], parents: dict[str, str], alpha: float
) -> TaskReport:
    task = task_table(name, completed, labels)
    for row in task.rows:
        row.parent_key = parents.get(row.key)
    regression = split_of(task.primary or "")[0] in REGRESSION
    task.baselines = task_baselines(completed, task.metric_names, regression)
    task.significance = test_task(task, alpha)
    task.frontiers, task.noise = frontiers(task)
    task.recommendations = recommend(task)
    task.evals = eval_rows(completed, labels)
    return task


def summarize(
    runs: list[RunRecord],
    results_dir: Path,
    skipped: list[tuple[Path, str]] | None = None,
    alpha: float = ALPHA,
) -> Report:
    """Build the report from run records: completed runs into task tables, failed runs apart.

    Labels are made over all runs of a task, so a failed run reads like the variant it belongs to.
    """
    runs, parents = derive(runs)
    configs = {r.key: r.config for r in runs}
    tasks, failed = [], []
    for name, task_runs in _by_task(runs).items():
        labels = _labels(task_runs, parents, configs)
        completed = [r for r in task_runs if r.status == "completed"]
        failed += _failed(task_runs, labels)
        if completed:
            tasks.append(_task_report(name, completed, labels, parents, alpha))
    report = Report(Path(results_dir), tasks, failed, list(skipped or []), n_runs=len(runs), alpha=alpha)
    report.overview = overview(tasks) if len(tasks) > 1 else None
    report.findings = findings(tasks)
    return report
