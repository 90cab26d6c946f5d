"""What ``nluforge eval`` and ``nluforge predict`` point at: a finished run directory, or a model.

:func:`open_target` is cheap (config and recorded labels only), so every check on the user's input
can run before :func:`load_target_model` loads any weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nluforge.core.errors import UserError


@dataclass
class Target:
    """``spec`` is the task the model predicts: its labels (in class-id order), text fields, metrics."""

    name: str
    run_dir: Path | None
    cfg: Any  # nluforge.experiments.config.RunConfig
    spec: Any  # nluforge.tasks.TaskSpec


def open_target(target: str, task: str | None, *, run_only: bool = False) -> Target:
    """A run directory (has ``config.yaml``), else a model name that needs ``--task``."""
    from nluforge.tasks import get_task

    run_dir = Path(target)
    if (run_dir / "config.yaml").is_file():
        from nluforge.experiments.config import read_run_config

        cfg = read_run_config(run_dir)
        return Target(target, run_dir, cfg, run_spec(run_dir, cfg))
    if run_only:
        raise UserError(f"{target} is not a run directory (no config.yaml); give a finished run's folder")
    if run_dir.is_dir() and (run_dir / "result.json").is_file():
        raise UserError(f"{target} has no config.yaml; it is not a complete run directory")
    if not task:
        raise UserError("evaluating a model (not a run directory) needs --task")
    from nluforge.experiments.config import RunConfig

    spec = get_task(task)
    return Target(target, None, RunConfig(task=spec.name, model=target, method="full"), spec)


def run_spec(run_dir: Path, cfg):
    """The spec a run's model predicts (a custom task's from what the run recorded)."""
    if cfg.task != "custom":
        from nluforge.tasks import get_task

        return get_task(cfg.task)
    from nluforge.experiments.servable import custom_run_spec

    if not (run_dir / "model").is_dir():
        raise UserError(f"{run_dir} has no saved model (model/ is missing); did the run finish?")
    return custom_run_spec(run_dir, cfg)


def load_target_model(t: Target, *, rank: int | None = None):
    """``(tokenizer, model)`` in eval mode; ``rank`` sets a DyLoRA run's rank."""
    if t.run_dir is None:
        if rank is not None:
            raise UserError("--rank applies to a DyLoRA run directory only")
        return _plain_model(t.name, t.spec)
    from nluforge.experiments.servable import load_servable

    s = load_servable(t.run_dir)  # any method's saved form, and derived (compressed) runs
    if rank is not None:
        setter = getattr(s.method, "set_rank", None)
        if setter is None:
            raise UserError(f"--rank applies to DyLoRA runs; this run's method is '{s.method.Config.method}'")
        setter(s.model, rank)
    return s.tokenizer, s.model


def _plain_model(target: str, spec):
    import typer

    from nluforge.models.loading import load_model, load_tokenizer

    typer.echo("note: evaluating a model directly: its classification head must already be trained for "
               f"{spec.name}", err=True)
    model = load_model(target, num_labels=spec.num_labels, label_names=spec.label_names).eval()
    return load_tokenizer(target), model
