"""``nluforge report RESULTS_DIR``: tables in the terminal, and report.html / report.md on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nluforge.cli.app import app


@app.command()
def report(
    results_dir: Path = typer.Argument(
        ..., help="Directory of run directories (searched recursively for result.json)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where to write the report [default: RESULTS_DIR/report]."
    ),
    alpha: Annotated[
        float,
        typer.Option(
            "--alpha",
            help="Significance level of the comparisons (Holm-corrected) behind every recommendation.",
        ),
    ] = 0.05,  # Annotated: a plain call, as `nluforge bench` makes, gets 0.05 too
) -> None:
    """Compare every variant in a results directory: tables, Pareto plots, what to use for your budget."""
    from rich.console import Console

    from nluforge.report import load_report, print_report, write_report
    from nluforge.report.build import DEFAULT_OUT

    loaded = load_report(
        results_dir, on_warning=lambda msg: typer.echo(f"warning: {msg}", err=True), alpha=alpha
    )
    paths = write_report(loaded, out if out is not None else results_dir / DEFAULT_OUT)
    console = Console()
    print_report(loaded, console)
    console.print(f"[bold]report.html[/bold]  {paths.html}")
    console.print(f"[bold]report.md[/bold]    {paths.markdown}")
