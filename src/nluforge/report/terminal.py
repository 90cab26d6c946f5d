"""The report in the terminal: one rich table per task, its recommendations, and the failed runs."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nluforge.report.format import DASH, optimal_on, table_columns
from nluforge.report.metrics import display_name
from nluforge.report.summary import Report
from nluforge.report.tables import TaskReport


def task_heading(task: TaskReport) -> Text:
    primary = display_name(task.primary) if task.primary else "none measured"
    return Text.assemble(
        (task.task, "bold"), f" · primary metric: {primary} · dev scores in %, mean ± std over seeds"
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
    for row in task.rows:
        star = Text("★ ", style="yellow") if optimal_on(task, row.key) else Text("")
        cells = [c.cell(row) for c in columns[1:]]
        table.add_row(star + Text(row.label), *(Text(x, style="dim") if x == DASH else x for x in cells))
    return table


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
    for task in report.tasks:
        console.print(task_heading(task))
        console.print(task_table(task))
        _recommendations(console, task)
        console.print()
    if report.failed:
        console.print("[bold red]Failed runs[/bold red] (not in the tables above)")
        console.print(_failed_table(report))
