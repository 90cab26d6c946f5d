"""The report as GitHub-flavoured Markdown, with the plots as SVG files beside it (``plots/``)."""

from __future__ import annotations

from nluforge.report.format import (
    DASH,
    fmt_stat,
    optimal_on,
    plural,
    table_columns,
    table_rows,
    within_noise_on,
)
from nluforge.report.html import READING_GUIDE
from nluforge.report.metrics import display_name
from nluforge.report.plots import Plot
from nluforge.report.summary import Report
from nluforge.report.tables import Recommendation, TaskReport, VariantRow


def _escape(text: str) -> str:
    """Make text safe inside a table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(task: TaskReport) -> list[str]:
    columns = table_columns(task)
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---:" if c.numeric else ":---" for c in columns) + "|",
    ]
    for row in table_rows(task):
        star = ""
        if isinstance(row, VariantRow):
            star = "★ " if optimal_on(task, row.key) else ("◇ " if within_noise_on(task, row.key) else "")
        cells = [f"{star}{row.label}"] + [c.cell(row) for c in columns[1:]]
        cells = [
            f"**{cell}**" if c.primary and cell != DASH else cell
            for c, cell in zip(columns, cells, strict=True)
        ]
        lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
    return lines


def _recommendation(rec: Recommendation) -> list[str]:
    if len(rec.items) == 1:
        return [f"- **{rec.heading}** — {rec.items[0]}."]
    return [f"- **{rec.heading}** — from best to cheapest:"] + [f"  - {item}" for item in rec.items]


def _task(task: TaskReport, plots: list[Plot], plot_dir: str) -> list[str]:
    primary = display_name(task.primary) if task.primary else "none measured"
    lines = [
        f"## {task.task}",
        "",
        f"{plural(len(task.rows), 'variant')} · primary metric: **{primary}**",
        "",
        "### Recommended for your budget",
        "",
    ]
    lines += [line for rec in task.recommendations for line in _recommendation(rec)]
    lines += [
        "",
        "### All variants",
        "",
        *_table(task),
        "",
        "★ optimal on at least one cost axis; ◇ dominated only within noise.",
        "",
        "### Pareto plots",
        "",
    ]
    lines += [f"![{p.title}]({plot_dir}/{p.name}.svg)" for p in plots] or [
        "Not enough variants with measured costs to plot."
    ]
    return lines + ["", *_evals(task)]


def _evals(task: TaskReport) -> list[str]:
    if not task.evals:
        return []
    lines = ["### Later evaluations", ""]
    for row in task.evals:
        metrics = ", ".join(f"{display_name(k)} {100 * v:.1f}" for k, v in row.metrics.items())
        runs = f" (mean of {row.runs} runs)" if row.runs > 1 else ""
        lines += [f"- **{row.name}** · {row.label} · {row.source} · n = {row.n:,} · {metrics}{runs}", ""]
        if row.groups:
            names = list(dict.fromkeys(k for g in row.groups.values() for k in g if k != "n"))
            lines.append(
                f"| {row.group_field or 'group'} | n | " + " | ".join(display_name(n) for n in names) + " |"
            )
            lines.append("|:---|---:|" + "---:|" * len(names))
            for value, g in row.groups.items():
                cells = [f"{100 * g[n]:.1f}" if n in g else DASH for n in names]
                lines.append(f"| {_escape(value)} | {int(g.get('n', 0)):,} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _overview(report: Report) -> list[str]:
    view = report.overview
    lines: list[str] = []
    if view is not None:
        avg = view.has_average
        lines += [
            "## Overview",
            "",
            "Primary metric per task, % ± half the 95% interval; the average is the unweighted mean.",
            "",
            "| Variant | "
            + " | ".join(f"{t} ({m})" for t, m in view.tasks)
            + (" | Average |" if avg else " |"),
            "|:---|" + "---:|" * (len(view.tasks) + avg),
        ]
        for row in view.rows:
            label = f"*{row.label}*" if row.baseline else row.label
            label += f" ({'; '.join(row.notes)})" if row.notes else ""
            cells = [fmt_stat(row.cells[t]) for t, _ in view.tasks] + ([fmt_stat(row.average)] if avg else [])
            lines.append("| " + " | ".join(_escape(x) for x in [label, *cells]) + " |")
        lines.append("")
    if view is not None or report.findings:
        lines += ["### What this run shows", ""]
        lines += [f"- {s}" for s in report.findings] or ["No significant finding on this data."]
        lines.append("")
    return lines


def _failed(report: Report) -> list[str]:
    if not report.failed:
        return []
    lines = [
        "## Failed runs",
        "",
        "Not included in the tables above.",
        "",
        "| Task | Variant | Seed | Error | Run |",
        "|:---|:---|---:|:---|:---|",
    ]
    for f in report.failed:
        seed = str(f.seed) if f.seed is not None else DASH
        lines.append(
            "| " + " | ".join(_escape(x) for x in (f.task, f.label, seed, f.error, f"`{f.run_id}`")) + " |"
        )
    return lines + [""]


def render_markdown(report: Report, plots: dict[str, list[Plot]], plot_dir: str = "plots") -> str:
    """The whole document; plot images are linked as ``{plot_dir}/{name}.svg``, relative to it."""
    lines = [
        "# Which variant for your budget?",
        "",
        f"nluforge report of `{report.results_dir}` · generated {report.generated} · "
        f"{len(report.tasks)} tasks, {report.n_variants} variants, {report.n_runs} result files, "
        f"{len(report.failed)} failed, {len(report.skipped)} unreadable · 95% intervals · significance "
        f"level α = {report.alpha:g}, Holm-corrected",
        "",
    ]
    lines += _overview(report)
    for task in report.tasks:
        lines += _task(task, plots.get(task.task, []), plot_dir)
    lines += _failed(report)
    if report.skipped:
        lines += ["## Unreadable result files", ""] + [f"- {reason}" for _, reason in report.skipped] + [""]
    lines += ["---", "", f"**How to read this report.** {READING_GUIDE}", ""]
    return "\n".join(lines)
