"""``nluforge attack RUN --recipe NAME``: attack a finished run's model on its dev examples.

Prints TextAttack's result table, writes per-example outcomes to ``RUN/attacks/<recipe>.jsonl`` and
the summary to ``RUN/evals/attack-<recipe>-<split>.json`` (the record the report reads).
"""

from __future__ import annotations

from pathlib import Path

import typer

from nluforge.cli.app import app
from nluforge.cli.options import Param


@app.command("attack")
def attack_command(
    run: Path = typer.Argument(..., help="A finished run directory (its model is attacked)."),
    recipe: str = typer.Option(..., "--recipe", help="deepwordbug, pwws or bert_attack."),
    params: list[str] = Param,
    split: str = typer.Option(None, "--split", help="Split to attack (default: the task's first dev split)."),
    max_examples: int = typer.Option(None, "--max-examples", help="A seeded sample of N examples "
                                     "(default: the recipe's max_examples, 200)."),
) -> None:
    """Attack a finished run with a recipe; record clean accuracy, accuracy under attack, success rate,
    perturbed-word fraction, queries and time."""
    from nluforge.core.config import overrides_to_dict
    from nluforge.core.errors import UserError
    from nluforge.experiments.attacks import (
        CACHE_DIR,
        attack_split,
        check_attackable,
        flat_metrics,
        recipe_step,
    )

    options = overrides_to_dict(params or [])
    if split:
        options["split"] = split
    if max_examples is not None:
        options["max_examples"] = max_examples
    step = recipe_step(recipe, options)  # unknown recipe / option: one line, before any model loads
    if not (run / "result.json").is_file():
        raise UserError(f"{run} is not a finished run (no result.json); train it first")
    from nluforge.attack.sweep import result_table
    from nluforge.eval.records import eval_record, write_eval
    from nluforge.experiments.data import load_data
    from nluforge.experiments.servable import load_servable

    s = load_servable(run)
    if s.spec.is_regression:
        check_attackable(s.spec, None, {})
    if step.method == "pwws":
        from nluforge.attack.wordnet import wordnet_dir

        wordnet_dir(step.config.wordnet_dir)  # missing WordNet: one line, before the data loads
    _, splits, _ = load_data(s.cfg, train=False)
    name = check_attackable(s.spec, step.config.split, splits)
    sweep = attack_split(s.model, s.tokenizer, s.spec, splits[name], name, step, run, run.parent / CACHE_DIR,
                         progress=True)
    metrics = sweep.metrics()
    typer.echo(f"{recipe} on {run.name}, split {name}:")
    typer.echo(result_table(metrics))
    flat = flat_metrics(recipe, metrics)
    record = eval_record(f"attack-{recipe}-{name}", {"kind": "attack", "recipe": recipe, "task": s.spec.name,
                                                      "split": name, "options": step.options()},
                         metrics["examples"], {k.split(".", 1)[1]: v for k, v in flat.items()})
    write_eval(run, record)
    if sweep.cache_hits:
        typer.echo(f"{sweep.cache_hits} outcome(s) reused from the cache", err=True)
    typer.echo(str(run / "attacks" / f"{recipe}.jsonl"))


@app.command("advglue")
def advglue_command(
    runs: list[Path] = typer.Argument(..., help="Finished run directories (trained with eval.advglue: true)."),
) -> None:
    """AdvGLUE summary: clean dev accuracy, AdvGLUE accuracy and the drop per task and averaged, with 95%
    bootstrap intervals, read from the runs' predictions (no model is loaded)."""
    from nluforge.report.advglue import format_table, summarize_runs

    rows, avg = summarize_runs(list(runs))
    typer.echo(format_table(rows, avg))
