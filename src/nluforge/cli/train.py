"""``nluforge train``: one run into ``--output-dir/<slug>--<hash8>/``."""

from __future__ import annotations

from pathlib import Path

import typer

from nluforge.cli.app import app, fail
from nluforge.cli.options import DataDir, Optim, OptimParam, Param, Set, config_layers


@app.command()
def train(
    task: str = typer.Option(None, "--task", "-t", help="Task name (see `nluforge tasks`) or 'custom'."),
    model: str = typer.Option(None, "--model", "-m", help="'default', a local folder or a hub id."),
    method: str = typer.Option(None, "--method", help="Adaptation method (see `nluforge methods`)."),
    pooling: str = typer.Option(None, "--pooling", help="What the head reads: auto (default: the checkpoint's "
                                "own pooling, e.g. mean for 'default'), cls, mean or max."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML run config; flags override it."),
    data_dir: str = DataDir,
    train_file: str = typer.Option(None, help="Custom task: training CSV/TSV/JSONL file."),
    validation_file: str = typer.Option(None, help="Custom task: validation file."),
    text_fields: list[str] = typer.Option(None, "--text-field", help="Custom task: text column (1 or 2)."),
    label_field: str = typer.Option(None, help="Custom task: label column."),
    max_train_samples: int = typer.Option(None, help="Seeded random subset of the training split."),
    k_shot: int = typer.Option(None, "--k-shot", help="K training examples per class (seeded, balanced)."),
    max_length: int = typer.Option(None, help="Max tokens per example (default 128)."),
    epochs: float = typer.Option(None, help="Training epochs (default 1)."),
    max_steps: int = typer.Option(None, help="Stop after this many optimizer steps."),
    lr: float = typer.Option(None, help="Learning rate (default: the method's recommended one)."),
    batch_size: int = typer.Option(None, help="Training batch size (default 32)."),
    eval_every: int = typer.Option(None, help="Evaluate every N steps (default: once per epoch)."),
    seed: int = typer.Option(None, help="Random seed (default 42)."),
    checkpoint_codec: str = typer.Option(None, "--checkpoint-codec", help="Compress training checkpoints: "
                                         "none (default) or dynaquant; options with --set "
                                         "train.checkpoint_codec_params.KEY=VALUE."),
    dp_epsilon: float = typer.Option(None, "--dp-epsilon", help="Train with DP-SGD (privacy method dp_sgd) "
                                     "to this epsilon; other options with --set privacy.params.KEY=VALUE."),
    dp_delta: float = typer.Option(None, "--dp-delta", help="DP delta (default 1/(10 n); must be < 1/n)."),
    dp_max_grad_norm: float = typer.Option(None, "--dp-max-grad-norm", help="DP per-example clipping norm C "
                                           "(default 1.0; Li et al. 2022 use 0.1, see privacy.config)."),
    audit_holdout: int = typer.Option(None, "--audit-holdout", help="Reserve N seeded training examples as "
                                      "non-members (and record N members) for `nluforge audit`."),
    params: list[str] = Param,
    optim: str = Optim,
    optim_params: list[str] = OptimParam,
    sets: list[str] = Set,
    output_dir: Path = typer.Option(Path("runs"), "--output-dir", "-o", help="Where run directories go."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoint."),
) -> None:
    """Fine-tune a model on a task with an adaptation method, measure it, and save it."""
    from nluforge.experiments.config import resolve
    from nluforge.experiments.pipeline import execute, prepare, run_children

    flags = {"task": task, "model": model, "method": method, "pooling": pooling, "seed": seed,
             "data.data_dir": data_dir, "data.train_file": train_file,
             "data.validation_file": validation_file, "data.text_fields": text_fields,
             "data.label_field": label_field, "data.max_train_samples": max_train_samples,
             "data.k_shot": k_shot, "data.max_length": max_length, "train.epochs": epochs,
             "train.max_steps": max_steps, "train.lr": lr, "train.batch_size": batch_size,
             "train.eval_every": eval_every, "train.checkpoint_codec": checkpoint_codec, "optimizer": optim,
             "data.audit_holdout": audit_holdout,
             "privacy.params.epsilon": dp_epsilon, "privacy.params.delta": dp_delta,
             "privacy.params.max_grad_norm": dp_max_grad_norm}
    if dp_epsilon is not None or dp_delta is not None or dp_max_grad_norm is not None:
        flags["privacy.method"] = "dp_sgd"
    cfg = resolve(config_layers(config, flags, params, sets, optim_params))
    run_dir = output_dir / cfg.parent().run_id()  # compress steps: derived runs beside it, afterwards
    if resume and not (run_dir / "checkpoints").is_dir():
        fail(f"nothing to resume: {run_dir} has no checkpoints; run again without --resume")
    from nluforge.core.runtime import is_main_process

    prep = prepare(cfg)
    if is_main_process():  # under torchrun, every process gets here; one speaks
        for note in prep.notes:
            typer.echo(f"note: {note}", err=True)
        typer.echo(f"run directory: {run_dir}", err=True)
    result = execute(prep, run_dir, resume=resume, show_progress=True)
    if result is None:  # not the main process of a multi-process run: the main one records and prints
        return
    _print_result(result, run_dir)
    for child in run_children(cfg, output_dir) if cfg.children() else []:
        typer.echo(f"derived run ({child.run_info.step}): {output_dir / child.run_info.id} "
                   f"[{child.run_info.status}{': ' + child.run_info.error if child.run_info.error else ''}]")


def _fmt(values: dict) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in values.items())


def _print_result(result, run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result.run_info.slug}", show_header=True)
    table.add_column("split")
    table.add_column("metrics")
    for stage, by_split in result.metrics.items():  # "trained"; prompt_based distill adds "pet_ensemble"
        for split, values in by_split.items():
            if stage == "baselines":  # one more level: baseline name → metrics (frozen base encoder)
                for name, scores in values.items():
                    table.add_row(f"{split} ({name}, frozen embeddings)", _fmt(scores))
                continue
            table.add_row(split if stage == "trained" else f"{split} ({stage})", _fmt(values))
    console = Console()
    console.print(table)
    c = result.cost
    console.print(f"trainable {c.trainable_params:,} / {c.total_params:,} params · "
                  f"{c.train_examples_per_s:.1f} train ex/s · peak {c.peak_memory_mb:.0f} MB · "
                  f"latency {c.latency_ms_bs1} ms (bs1) · model {c.model_size_mb:.1f} MB")
    if c.optimizer_state_mb is not None:
        console.print(f"optimizer state {c.optimizer_state_mb:.1f} MB · peak split: weights "
                      f"{c.memory_weights_mb:.0f}, gradients {c.memory_gradients_mb:.0f}, activations "
                      f"{c.memory_activations_mb:.0f} MB ({c.memory_split_kind})")
    typer.echo(str(run_dir))
