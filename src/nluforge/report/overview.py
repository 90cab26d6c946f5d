"""The first section when a run spans several tasks: a GLUE-leaderboard table and what the run shows.

One row per variant (variants are matched across tasks by label), one column per task with the task's
primary metric as ``score ± interval``, the majority baseline as the first row, and the unweighted
average of the primary metrics (as the GLUE score averages them) for variants scored on every task.
The average's interval averages the tasks' bootstrap replicates (tasks are independent samples); it has
none when a task has no per-example predictions.

"What this run shows" is written from significant findings only (Holm-corrected tests, see
``significance``), plus the facts read from predictions (degenerate variants).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from nluforge.report.format import fmt_pct
from nluforge.report.metrics import display_name
from nluforge.report.significance import candidates, tied_with_best
from nluforge.report.stats import CONFIDENCE, Evidence
from nluforge.report.tables import Stat, TaskReport

AVERAGE = "Average"


@dataclass
class OverviewRow:
    label: str
    cells: dict[str, Stat | None]  # task -> primary score
    average: Stat | None = None
    notes: list[str] = field(default_factory=list)  # "degenerate on mrpc"
    baseline: bool = False


@dataclass
class Overview:
    tasks: list[tuple[str, str]]  # (task, primary metric display name)
    rows: list[OverviewRow]  # baseline first, then by average (or first task) score

    @property
    def has_average(self) -> bool:
        return any(r.average is not None for r in self.rows)


def _average(stats: list[Stat]) -> Stat:
    point = float(np.mean([s.mean for s in stats]))
    reps = [s.evidence.replicates if s.evidence else None for s in stats]
    if all(r is not None for r in reps) and len({len(r) for r in reps}) == 1:
        replicates = np.mean(np.stack(reps), axis=0)
        tail = 100 * (1 - CONFIDENCE) / 2
        lo, hi = (float(v) for v in np.percentile(replicates, [tail, 100 - tail]))
        ev = Evidence(point, min(lo, point), max(hi, point), "bootstrap", (point,), replicates=replicates)
        return Stat(point, None, 1, ev.lo, ev.hi, ev)
    return Stat(point, None, 1)


def overview(tasks: list[TaskReport]) -> Overview:
    """The cross-task table (see the module docstring)."""
    columns = [(t.task, display_name(t.primary) if t.primary else "—") for t in tasks]
    key = _row_key(tasks)
    labels = list(dict.fromkeys(key(r.label) for t in tasks for r in t.rows))
    rows = []
    for label in labels:
        cells, notes = {}, []
        for t in tasks:
            row = next((r for r in t.rows if key(r.label) == label), None)
            cells[t.task] = row.stat(t.primary) if row else None
            if row and row.degenerate:
                notes.append(f"{row.degenerate} on {t.task}")
        scored = [c for c in cells.values() if c is not None]
        average = _average(scored) if len(scored) == len(tasks) else None
        rows.append(OverviewRow(label, cells, average, notes))
    first = tasks[0].task
    rows.sort(
        key=lambda r: -(r.average.mean if r.average else (r.cells[first].mean if r.cells[first] else -9))
    )
    base_cells = {t.task: _majority(t) for t in tasks}
    if any(base_cells.values()):
        scored = [c for c in base_cells.values() if c is not None]
        avg = _average(scored) if len(scored) == len(tasks) else None
        rows.insert(0, OverviewRow("majority-class baseline", base_cells, avg, baseline=True))
    return Overview(columns, rows)


_SUBSET = re.compile(r" · n=\d+")


def _row_key(tasks: list[TaskReport]):
    """How a variant is matched across tasks: by its label, less the training-subset size when every task
    has one size per variant (the main job caps each task differently: full · n=2000 on SST-2 and
    full · n=500 on RTE are one row)."""
    for t in tasks:
        stripped = [_SUBSET.sub("", r.label) for r in t.rows]
        if len(set(stripped)) < len(stripped):
            return lambda label: label
    return lambda label: _SUBSET.sub("", label)


def _majority(task: TaskReport) -> Stat | None:
    base = next((b for b in task.baselines if b.kind == "majority"), None)
    return base.metrics.get(task.primary or "") if base else None


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}".replace("-", "\u2212")


def _others(n: int) -> str:
    return "the other variant" if n == 1 else f"the other {n} variants"


def task_findings(task: TaskReport) -> list[str]:
    """Sentences about one task, each backed by a significant test or read from the predictions."""
    metric = display_name(task.primary) if task.primary else ""
    sig = task.significance
    majority = _majority(task)
    out = []
    degenerate = [r for r in task.rows if r.degenerate]
    if degenerate and len(degenerate) == len(task.rows):
        ref = f" (the majority baseline scores {fmt_pct(majority.mean)} {metric})" if majority else ""
        out.append(f"On {task.task}, every variant {degenerate[0].degenerate}{ref}: nothing was learned.")
    elif degenerate:  # "predicts one class" → "predict one class" after a plural subject
        verb = degenerate[0].degenerate.replace("predicts", "predict" if len(degenerate) > 1 else "predicts", 1)
        out.append(f"On {task.task}, {len(degenerate)} of {len(task.rows)} variants {verb}.")
    if sig is None:
        return out
    tested = [k for k, p in sig.adjusted_baseline.items() if p is not None]
    above = [k for k in tested if sig.above_baseline(k)]
    if tested and above:
        out.append(
            f"On {task.task}, {len(above)} of {len(tested)} variants score significantly above the "
            f"majority baseline ({fmt_pct(majority.mean)} {metric})."
        )
    elif tested and not degenerate:
        out.append(f"On {task.task}, no variant scores significantly above the majority baseline.")
    tied, rest = tied_with_best(task), candidates(task)
    if len(tied) == 1 and len(rest) > 1:
        best = tied[0]
        worst_p = max(sig.test(best.key, r.key)[1] for r in rest[1:])
        out.append(
            f"On {task.task}, {best.label} is the best variant ({fmt_pct(best.score(task.primary))} {metric}), "
            f"significantly above {_others(len(rest) - 1)} (Holm-adjusted p ≤ {worst_p:.2g})."
        )
    elif len(tied) > 1:  # no single best: still say which variants the top one significantly beats
        top = tied[0]
        below = [r for r in task.rows if r.key != top.key and sig.better(top.key, r.key)]
        if below:
            worst_p = max(sig.test(top.key, r.key)[1] for r in below)
            names = ", ".join(f"{r.label} ({fmt_pct(r.score(task.primary))})" for r in below)
            out.append(
                f"On {task.task}, the top-scoring variant, {top.label} ({fmt_pct(top.score(task.primary))} {metric}), "
                f"scores significantly above {names} (Holm-adjusted p ≤ {worst_p:.2g}); it is indistinguishable "
                f"from {_others(len(tied) - 1).replace('the other', 'the other top')}."
            )
    for row in task.rows:
        if row.parent_key and any(r.key == row.parent_key for r in task.rows):
            found = sig.test(row.key, row.parent_key)
            if found and found[1] is not None and found[1] < sig.alpha:
                parent = task.row(row.parent_key)
                out.append(
                    f"On {task.task}, {row.step} changes {metric} of {parent.label} by "
                    f"{_signed(found[0].diff)} points (Holm-adjusted p = {found[1]:.2g})."
                )
    return out


def findings(tasks: list[TaskReport]) -> list[str]:
    """ "What this run shows", task by task."""
    return [sentence for task in tasks for sentence in task_findings(task)]
