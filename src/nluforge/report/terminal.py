"""The report in the terminal: one rich table per task, its recommendations, and the failed runs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nluforge.report.format import DASH, fmt_stat, optimal_on, table_columns, table_rows, within_noise_on
from nluforge.report.metrics import display_name
from nluforge.report.summary import Report
from nluforge.report.tables import TaskReport, VariantRow


def task_heading(task: TaskReport) -> Text:
    primary = display_name(task.primary) if task.primary else "none measured"
    return Text.assemble(
        (task.task, "bold"), f" · primary metric: {primary} · dev scores in %, mean ± half the 95% interval"
    )


def task_table(task: TaskReport) -> Table:
    """A task's variants, best first; ★ marks the Pareto-optimal ones."""
    table = Table(header_style="bold")
    columns = table_columns(task)
    for column in columns:
        table.add_column(
            column.header,
            justify="right" if column.numeric else "left",
            style="bold" if column.primary else None,
            overflow="fold",
        )
    for row in table_rows(task):
        star = Text("")
        if isinstance(row, VariantRow) and optimal_on(task, row.key):
            star = Text("★ ", style="yellow")
        elif isinstance(row, VariantRow) and within_noise_on(task, row.key):
            star = Text("◇ ", style="dim")
        style = None if isinstance(row, VariantRow) else "italic dim"
        cells = [c.cell(row) for c in columns[1:]]
        table.add_row(
            star + Text(row.label), *(Text(x, style="dim") if x == DASH else x for x in cells), style=style
        )
    return table


def _overview(console: Console, report: Report) -> None:
    view = report.overview
    if view is not None:
        table = Table(header_style="bold", title="Overview: primary metric per task")
        table.add_column("Variant", overflow="fold")
        for t, m in view.tasks:
            table.add_column(f"{t} ({m})", justify="right")
        if view.has_average:
            table.add_column("Average", justify="right", style="bold")
        for row in view.rows:
            cells = [fmt_stat(row.cells[t]) for t, _ in view.tasks]
            cells += [fmt_stat(row.average)] if view.has_average else []
            label = row.label + (f" ({'; '.join(row.notes)})" if row.notes else "")
            table.add_row(label, *cells, style="italic dim" if row.baseline else None)
        console.print(table)
    if report.findings:
        console.print("[bold]What this run shows[/bold]")
        for sentence in report.findings:
            console.print(f"  • {sentence}")
        console.print()


def _recommendations(console: Console, task: TaskReport) -> None:
    if not task.recommendations:
        return
    console.print(f"[bold]Recommended for your budget ({task.task})[/bold]")
    for rec in task.recommendations:
        console.print(Text.assemble("  • ", (rec.heading, "bold"), ": ", rec.text))


def _failed_table(report: Report) -> Table:
    table = Table(header_style="bold")
    for header in ("Task", "Variant", "Seed", "Error"):
        table.add_column(header, overflow="fold")
    for f in report.failed:
        error = f.error.splitlines()[0] if f.error else ""
        table.add_row(f.task, f.label, str(f.seed) if f.seed is not None else DASH, Text(error, style="red"))
    return table


def print_report(report: Report, console: Console | None = None) -> None:
    """Print every task's table and recommendations, then the failed runs."""
    console = console or Console()
    _overview(console, report)
    for task in report.tasks:
        console.print(task_heading(task))
        console.print(task_table(task))
        _recommendations(console, task)
        console.print()
    if report.failed:
        console.print("[bold red]Failed runs[/bold red] (not in the tables above)")
        console.print(_failed_table(report))
