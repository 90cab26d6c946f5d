"""``nluforge compress RUN --method NAME``: a derived run beside RUN, holding its compressed model."""

from __future__ import annotations

from pathlib import Path

import typer

from nluforge.cli.app import app
from nluforge.cli.options import Param


@app.command()
def compress(
    run: Path = typer.Argument(..., help="A finished run directory (its model is compressed)."),
    method: str = typer.Option(..., "--method", help="Compressor, e.g. int8_dynamic."),
    params: list[str] = Param,
) -> None:
    """Compress a finished run's model into a derived run (a sibling directory) and compare it with its parent."""
    import dataclasses

    from nluforge.core.config import overrides_to_dict
    from nluforge.experiments.config import read_run_config
    from nluforge.experiments.derived import prepare_derived
    from nluforge.experiments.pipeline import execute

    cfg = read_run_config(run)
    step = {"method": method, **overrides_to_dict(params or [])}
    child = dataclasses.replace(cfg.parent(), compress=[step])
    prep = prepare_derived(child, run)  # validates the step and the parent before anything is written
    run_dir = run.parent / child.run_id()
    typer.echo(f"derived run directory: {run_dir}", err=True)
    existed = run_dir.exists()
    try:
        result = execute(prep, run_dir, show_progress=False)
    except BaseException:  # a compressor that cannot apply to this model: leave no half-made derived run
        if not existed:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    _print(result, prep.parent.result)
    typer.echo(str(run_dir))


def _print(result, parent) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("", "parent", result.run_info.step, title=f"{result.run_info.parent} → {result.run_info.step}")
    for split, values in result.metrics.get("trained", {}).items():
        before = parent.metrics.get("trained", {}).get(split, {})
        for name, value in values.items():
            was = before.get(name)
            table.add_row(f"{split} {name}", f"{was:.4f}" if was is not None else "-", f"{value:.4f}")
    for field in ("model_size_mb", "latency_ms_bs1", "latency_ms_bs32"):
        was, now = getattr(parent.cost, field), getattr(result.cost, field)
        table.add_row(field, "-" if was is None else f"{was:g}", "-" if now is None else f"{now:g}")
    Console().print(table)
