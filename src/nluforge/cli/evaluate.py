"""``nluforge eval``: a finished run, or any model, on any task and split (AdvGLUE included)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nluforge.cli.app import app
from nluforge.cli.options import DataDir
from nluforge.core.errors import UserError


@app.command("eval")
def evaluate(
    target: str = typer.Argument(..., help="A run directory, or a model ('default', folder, hub id)."),
    task: str = typer.Option(None, "--task", "-t", help="Task to evaluate on (default: the run's task). "
                             "AdvGLUE sets: advglue_sst2, advglue_mnli, ..."),
    split: list[str] = typer.Option(None, "--split", help="Split(s) (default: the task's dev split(s))."),
    data_dir: str = DataDir,
    advglue_file: str = typer.Option(None, help="Local AdvGLUE dev.json(.gz)."),
    max_eval_samples: int = typer.Option(None, help="Seeded subset of each split."),
    rank: int = typer.Option(None, "--rank", help="DyLoRA: evaluate at rank k <= r."),
    batch_size: int = typer.Option(64, help="Evaluation batch size."),
    output: Path = typer.Option(None, "--output", help="Also write the metrics to this JSON file."),
) -> None:
    """Evaluate a finished run or a model and print the task metrics."""
    from nluforge.core.io import atomic_write_json

    prep = _load_target(target, task, split, data_dir, advglue_file, max_eval_samples, rank, batch_size)
    names = list(split or prep.spec.eval_splits)
    for name in names:
        if name not in prep.splits:
            raise UserError(f"task '{prep.spec.name}' has no split '{name}'; available: {', '.join(prep.splits)}")
    from nluforge.experiments.pipeline import encode_splits
    from nluforge.experiments.stages import evaluate as evaluate_splits

    metrics = evaluate_splits(prep, prep.model, encode_splits(prep, names), names, None)
    _print(prep.spec.name, metrics, {n: len(prep.splits[n]) for n in names})
    if output:
        atomic_write_json(output, {"target": target, "task": prep.spec.name, "metrics": metrics})


def _load_target(target, task, split, data_dir, advglue_file, max_eval_samples, rank, batch_size):
    from nluforge.experiments.pipeline import Prepared
    from nluforge.tasks import get_task, load_task

    run_dir = Path(target)
    if (run_dir / "config.yaml").is_file():
        from nluforge.experiments.stages import load_run

        cfg, spec, tokenizer, model, module, method_cfg = load_run(run_dir)
        data_dir = data_dir or cfg.data.data_dir
        advglue_file = advglue_file or cfg.eval.advglue_file
        _set_rank(module, model, rank)
    else:
        if not task:
            raise UserError("evaluating a model (not a run directory) needs --task")
        cfg, tokenizer, model, module, method_cfg = _plain_model(target, get_task(task))
        if rank is not None:
            raise UserError("--rank applies to a DyLoRA run directory only")
    spec = get_task(task) if task else spec
    cfg.train.eval_batch_size = batch_size
    data = load_task(spec, data_dir=data_dir, advglue_file=advglue_file, max_eval_samples=max_eval_samples,
                     seed=cfg.seed, splits=list(split or spec.eval_splits))
    return Prepared(cfg, data.spec, dict(data.splits), tokenizer, model, module, method_cfg, [])


def _set_rank(module, model, rank: int | None) -> None:
    if rank is None:
        return
    setter = getattr(module, "set_rank", None)
    if setter is None:
        raise UserError(f"--rank applies to DyLoRA runs; this run's method is '{module.Config.method}'")
    setter(model, rank)


def _plain_model(target: str, spec):
    from nluforge.experiments.config import RunConfig
    from nluforge.methods import method_config, method_module
    from nluforge.models.loading import load_model, load_tokenizer

    typer.echo("note: evaluating a model directly: its classification head must already be trained for "
               f"{spec.name}", err=True)
    cfg = RunConfig(task=spec.name, model=target, method="full")
    model = load_model(target, num_labels=spec.num_labels, label_names=spec.label_names).eval()
    return cfg, load_tokenizer(target), model, method_module("full"), method_config("full")


def _print(task: str, metrics: dict, sizes: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("split", "n", "metrics", title=f"{task}")
    for split, values in metrics.items():
        table.add_row(split, str(sizes.get(split, "")), "  ".join(f"{k}={v:.4f}" for k, v in values.items()))
    Console().print(table)
    typer.echo(json.dumps(metrics))
