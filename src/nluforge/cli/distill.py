"""``nluforge distill --teacher RUN --student SPEC``: a derived run beside RUN holding a distilled student."""

from __future__ import annotations

from pathlib import Path

import typer

from nluforge.cli.app import app
from nluforge.cli.options import Param


@app.command()
def distill(
    teacher: Path = typer.Option(..., "--teacher", help="A finished run directory: its model is the teacher."),
    student: str = typer.Option(..., "--student", help="layers:K (the teacher cut to K layers) or a model: "
                                "default, a folder or a hub id."),
    params: list[str] = Param,
) -> None:
    """Distil a finished run into a smaller student (a sibling run) and compare it with its teacher.

    Options (-p key=value): layer_pick=first|every_other|last|uniform, temperature, kd_weight,
    minilm_weight, hard_weight, relation_heads, assistant=layers:K, unlabeled_file, max_train_samples,
    epochs, max_steps, lr, batch_size.
    """
    import dataclasses

    from nluforge.core.config import overrides_to_dict
    from nluforge.experiments.config import read_run_config
    from nluforge.experiments.derived import prepare_derived
    from nluforge.experiments.pipeline import execute

    cfg = read_run_config(teacher)
    step = {**overrides_to_dict(params or []), "student": student}
    child = dataclasses.replace(cfg.parent(), distill=[step])
    prep = prepare_derived(child, teacher)  # every check (options, teacher, student) before anything is written
    run_dir = teacher.parent / child.run_id()
    typer.echo(f"derived run directory: {run_dir}", err=True)
    result = execute(prep, run_dir, show_progress=True)
    _print(result, prep.parent.result)
    typer.echo(str(run_dir))


def _print(result, parent) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("", "teacher", result.run_info.step, title=f"{result.run_info.parent} → {result.run_info.step}")
    for split, values in result.metrics.get("trained", {}).items():
        before = parent.metrics.get("trained", {}).get(split, {}) if parent else {}
        for name, value in values.items():
            was = before.get(name)
            table.add_row(f"{split} {name}", f"{was:.4f}" if was is not None else "-", f"{value:.4f}")
    for field in ("total_params", "model_size_mb", "latency_ms_bs1", "latency_ms_bs32", "train_time_s"):
        was = getattr(parent.cost, field) if parent else None
        now = getattr(result.cost, field)
        table.add_row(field, "-" if was is None else f"{was:g}", "-" if now is None else f"{now:g}")
    Console().print(table)
