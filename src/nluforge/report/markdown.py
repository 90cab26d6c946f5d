"""The report as GitHub-flavoured Markdown, with the plots as SVG files beside it (``plots/``)."""

from __future__ import annotations

from nluforge.report.format import DASH, optimal_on, plural, table_columns
from nluforge.report.html import READING_GUIDE
from nluforge.report.metrics import display_name
from nluforge.report.plots import Plot
from nluforge.report.summary import Report
from nluforge.report.tables import Recommendation, TaskReport


def _escape(text: str) -> str:
    """Make text safe inside a table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(task: TaskReport) -> list[str]:
    columns = table_columns(task)
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---:" if c.numeric else ":---" for c in columns) + "|",
    ]
    for row in task.rows:
        star = "★ " if optimal_on(task, row.key) else ""
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
        "★ Pareto-optimal on at least one axis.",
        "",
        "### Pareto plots",
        "",
    ]
    lines += [f"![{p.title}]({plot_dir}/{p.name}.svg)" for p in plots] or [
        "Not enough variants with measured costs to plot."
    ]
    return lines + [""]


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
        f"{len(report.failed)} failed, {len(report.skipped)} unreadable",
        "",
    ]
    for task in report.tasks:
        lines += _task(task, plots.get(task.task, []), plot_dir)
    lines += _failed(report)
    if report.skipped:
        lines += ["## Unreadable result files", ""] + [f"- {reason}" for _, reason in report.skipped] + [""]
    lines += ["---", "", f"**How to read this report.** {READING_GUIDE}", ""]
    return "\n".join(lines)
