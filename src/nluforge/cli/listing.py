"""``nluforge tasks``, ``nluforge methods`` and ``nluforge compressors``: what is registered, one line each."""

from __future__ import annotations

import typer

from nluforge.cli.app import app


@app.command()
def tasks() -> None:
    """List the registered tasks."""
    from rich.console import Console
    from rich.table import Table

    from nluforge.tasks import TASKS, get_task

    table = Table("task", "labels", "metrics", "summary", box=None)
    for entry in TASKS.entries():
        spec = get_task(entry.name)
        labels = "regression" if spec.is_regression else "/".join(spec.label_names)
        table.add_row(entry.name, labels, ",".join(spec.metrics), entry.summary or spec.summary)
    Console().print(table)


@app.command()
def methods() -> None:
    """List the adaptation methods with their papers."""
    from rich.console import Console
    from rich.table import Table

    from nluforge.methods import METHODS

    table = Table("method", "paper", "summary", "default lr", box=None)
    for entry in METHODS.entries():
        table.add_row(entry.name, entry.meta["paper"], entry.summary, f"{entry.meta['default_lr']:g}")
    Console().print(table)
    typer.echo("options: `nluforge train --method NAME -p key=value`; see README for each method's keys")


@app.command()
def compressors() -> None:
    """List the compressors with their papers."""
    from rich.console import Console
    from rich.table import Table

    from nluforge.compress import COMPRESSORS

    table = Table("compressor", "paper", "summary", box=None)
    for entry in COMPRESSORS.entries():
        table.add_row(entry.name, entry.meta["paper"], entry.summary)
    Console().print(table)
    typer.echo("options: `nluforge compress RUN --method NAME -p key=value`, or a run's `compress:` steps")
