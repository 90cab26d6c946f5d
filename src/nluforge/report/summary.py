"""The whole report as data: a table, fronts and recommendations per task, plus the failed runs.

Renderers (HTML, Markdown, terminal) only format a :class:`Report`; all numbers are decided here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from nluforge.report.collect import RunRecord
from nluforge.report.pareto import frontiers
from nluforge.report.recommend import recommend
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


def summarize(
    runs: list[RunRecord], results_dir: Path, skipped: list[tuple[Path, str]] | None = None
) -> Report:
    """Build the report from run records: completed runs into task tables, failed runs apart.

    Labels are made over all runs of a task, so a failed run reads like the variant it belongs to.
    """
    tasks, failed = [], []
    for name, task_runs in _by_task(runs).items():
        labels = label_variants({r.key: r.config for r in task_runs})
        completed = [r for r in task_runs if r.status == "completed"]
        failed += _failed(task_runs, labels)
        if not completed:
            continue
        task = task_table(name, completed, labels)
        task.frontiers = frontiers(task)
        task.recommendations = recommend(task)
        tasks.append(task)
    return Report(Path(results_dir), tasks, failed, list(skipped or []), n_runs=len(runs))
