"""``nluforge tasks``, ``nluforge methods``, ``nluforge optimizers`` and ``nluforge compressors``: what is registered, one line each."""

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
def optimizers() -> None:
    """List the optimizers with their papers and optimizer-state size per parameter (claimed)."""
    from rich.console import Console
    from rich.table import Table

    from nluforge.optim import OPTIMIZERS

    table = Table("optimizer", "paper", "state per parameter", "needs", "summary", box=None)
    for entry in OPTIMIZERS.entries():
        needs = {"second_order": "backward with create_graph", "zeroth_order": "forward passes only"}
        wants = [needs[k] for k in [entry.meta.get("update_step")] if k]
        if entry.meta.get("attn_implementation"):
            wants.append(f"{entry.meta['attn_implementation']} attention")
        table.add_row(entry.name, entry.meta["paper"], entry.meta["state_per_param"], ", ".join(wants) or "-",
                      entry.summary)
    Console().print(table)
    typer.echo("options: `nluforge train --optim NAME --optim-param key=value`; each run records "
               "cost.optimizer_state_mb and the peak memory by part")


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
