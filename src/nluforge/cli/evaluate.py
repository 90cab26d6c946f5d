"""``nluforge eval``: a finished run, or any model, on any task and split (AdvGLUE included), or on
the user's own CSV/TSV/JSONL file; results are recorded in ``RUN/evals/<name>.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    eval_file: Path = typer.Option(None, "--eval-file", help="Score your own labelled CSV, TSV or JSONL "
                                   "file (optionally .gz) instead of a task's split."),
    text_fields: list[str] = typer.Option(None, "--text-field", help="--eval-file: text column (1 or 2; "
                                          "default: the run's own field names)."),
    label_field: str = typer.Option(None, "--label-field", help="--eval-file: label column (default 'label')."),
    label_map: list[str] = typer.Option(None, "--label-map", help="Model label → data label: "
                                        "'positive=pos,negative=neg', several model labels onto one "
                                        "('neutral=non-entailment,contradiction=non-entailment'), or a "
                                        "YAML/JSON file. Every model label must be mapped."),
    group_field: str = typer.Option(None, "--group-field", help="--eval-file: also score per value of "
                                    "this column."),
    name: str = typer.Option(None, "--name", help="Record name under RUN/evals/ (default: <task>-<split> "
                             "or file-<stem>); a rerun with the same name replaces it."),
    data_dir: str = DataDir,
    advglue_file: str = typer.Option(None, help="Local AdvGLUE dev.json(.gz)."),
    max_eval_samples: int = typer.Option(None, help="Seeded subset of each split."),
    rank: int = typer.Option(None, "--rank", help="DyLoRA: evaluate at rank k <= r."),
    batch_size: int = typer.Option(64, help="Evaluation batch size."),
    output: Path = typer.Option(None, "--output", help="Also write the metrics to this JSON file."),
    checkpoint: str = typer.Option(None, "--checkpoint", help="Evaluate the run's training checkpoint "
                                   "(step-000200, 200 or latest; compressed ones are decoded) instead of "
                                   "its final model; the record name gets the step appended."),
) -> None:
    """Evaluate a finished run or a model, print the metrics, and record them under RUN/evals/."""
    from nluforge.cli.targets import open_target
    from nluforge.core.io import atomic_write_json
    from nluforge.eval.records import safe_name
    from nluforge.eval.scoring import parse_label_map

    _check_flags(eval_file, task, split, text_fields, label_field, group_field, batch_size)
    mapping_given = parse_label_map(label_map)
    if name:
        safe_name(name)
    t = open_target(target, task)
    if eval_file and task and t.run_dir is not None:
        raise UserError("give --eval-file or --task, not both (a model that is not a run takes --task "
                        "to say which task's labels it predicts)")
    if eval_file:
        jobs = [_file_job(t, eval_file, text_fields, label_field, group_field, mapping_given, name)]
    else:
        jobs = _task_jobs(t, task, split, data_dir, advglue_file, max_eval_samples, mapping_given, name)
    if checkpoint is not None and t.run_dir is None:
        raise UserError("--checkpoint needs a run directory (one trained with checkpoints kept)")
    records = _run(t, jobs, rank, batch_size, checkpoint)
    for record in records:
        _print(record)
    if t.run_dir is not None:
        from nluforge.eval.records import write_eval

        for record in records:
            typer.echo(f"recorded {write_eval(t.run_dir, record)}", err=True)
    typer.echo(json.dumps({r["name"]: r["metrics"] for r in records}))
    if output:
        by_split = {r["source"].get("split") or r["name"]: r["metrics"] for r in records}
        atomic_write_json(output, {"target": target, "task": jobs[0].spec.name, "metrics": by_split,
                                   "evals": records})


def _check_flags(eval_file, task, split, text_fields, label_field, group_field, batch_size) -> None:
    if eval_file and split:
        raise UserError("give --eval-file or --split, not both")
    if not eval_file:
        given = [f for f, v in (("--text-field", text_fields), ("--label-field", label_field),
                                ("--group-field", group_field)) if v]
        if given:
            raise UserError(f"{given[0]} applies to --eval-file only")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")


@dataclass
class _Job:
    """One evaluation to run: texts, gold target ids (or scores), how predictions map, its record."""

    name: str
    source: dict
    spec: Any  # the TaskSpec it is scored with
    texts: list[tuple[str, ...]]
    labels: Any  # np.ndarray: target label ids, or floats for regression
    mapping: Any = None  # LabelMapping, None for regression
    groups: list[str] | None = None
    group_field: str | None = None


def _file_job(t, path: Path, text_fields, label_field, group_field, label_map, name) -> _Job:
    import numpy as np

    from nluforge.eval.records import file_eval_name
    from nluforge.eval.scoring import build_mapping, file_spec
    from nluforge.tasks.custom import read_rows

    rows = read_rows(path, t.spec, text_fields=text_fields, label_field=label_field, need_labels=True,
                     group_field=group_field)
    if t.spec.is_regression:
        if label_map:
            raise UserError(f"--label-map applies to classification; {t.spec.name} is a regression task")
        labels = np.asarray([_number(v, path) for v in rows.labels], dtype=np.float64)
        mapping, spec = None, t.spec
    else:
        mapping = build_mapping(t.spec.label_names, label_map)
        labels = mapping.target_ids(rows.labels, str(path))
        spec = file_spec(t.spec, mapping)
    source = {"kind": "file", "file": str(path.resolve())}
    return _Job(name or file_eval_name(path), source, spec, rows.texts, labels, mapping, rows.groups,
                group_field)


def _number(value: str, path: Path) -> float:
    try:
        return float(value)
    except ValueError:
        raise UserError(f"{path} has label '{value}', not a number (the run is a regression task)") from None


def _task_jobs(t, task, split, data_dir, advglue_file, max_eval_samples, label_map, name) -> list[_Job]:
    import numpy as np

    from nluforge.eval.records import task_eval_name
    from nluforge.eval.scoring import build_mapping
    from nluforge.tasks import get_task, load_task

    cfg = t.cfg
    spec = get_task(task) if task else t.spec
    files = {}
    if not task and cfg.task == "custom":  # a custom run's own dev split: the files it recorded
        files = {"validation_file": cfg.data.validation_file, "test_file": cfg.data.test_file,
                 "text_fields": cfg.data.text_fields, "label_field": cfg.data.label_field}
        if not cfg.data.validation_file:
            raise UserError(f"{t.name} recorded no validation file; evaluate it with --eval-file FILE")
    names = list(split or spec.eval_splits)
    data = load_task(spec, data_dir=data_dir or cfg.data.data_dir, max_eval_samples=max_eval_samples,
                     advglue_file=advglue_file or cfg.eval.advglue_file, seed=cfg.seed, splits=names, **files)
    if spec.is_regression != t.spec.is_regression:
        raise UserError(f"{t.name} predicts {t.spec.name} ({_kind(t.spec)}); {spec.name} is {_kind(spec)}")
    if len(names) > 1 and name:
        raise UserError("--name names one record; evaluate one --split at a time with it")
    mapping = None if spec.is_regression else build_mapping(t.spec.label_names, label_map, data.spec.label_names)
    if spec.is_regression and label_map:
        raise UserError(f"--label-map applies to classification; {spec.name} is a regression task")
    jobs = []
    for split_name in names:
        if split_name not in data.splits:
            raise UserError(f"task '{spec.name}' has no split '{split_name}'; available: {', '.join(data.splits)}")
        s = data.splits[split_name]
        labels = np.asarray(s.labels)
        if mapping is not None:
            _check_producible(mapping, labels, f"{spec.name} {split_name}")
        source = {"kind": "task", "task": data.spec.name, "split": split_name}
        jobs.append(_Job(name or task_eval_name(data.spec.name, split_name), source, data.spec, s.texts,
                         labels, mapping))
    return jobs


def _kind(spec) -> str:
    return "regression" if spec.is_regression else "classification"


def _check_producible(mapping, labels, where: str) -> None:
    produced = set(mapping.to_target)
    never = sorted({mapping.target_labels[i] for i in set(labels.tolist()) - produced})
    if never:
        raise UserError(f"{where} has label(s) {', '.join(never)} that the model can never produce; "
                        "map a model label onto them with --label-map")


def _run(t, jobs: list[_Job], rank, batch_size, checkpoint: str | None = None) -> list[dict]:
    from nluforge.cli.targets import load_target_model
    from nluforge.eval.predict import predict_texts, to_predictions
    from nluforge.eval.records import eval_record
    from nluforge.eval.scoring import group_metrics, score

    if checkpoint is not None:
        from nluforge.experiments.checkpoints import model_at_checkpoint

        tokenizer, model, step_name = model_at_checkpoint(t.run_dir, t.cfg, t.spec, checkpoint)
        for job in jobs:
            job.name = f"{job.name}-{step_name}"
            job.source = {**job.source, "checkpoint": step_name}
    else:
        tokenizer, model = load_target_model(t, rank=rank)
    regression = t.spec.is_regression
    records = []
    for job in jobs:
        logits = predict_texts(model, tokenizer, job.texts, max_length=t.cfg.data.max_length,
                               batch_size=batch_size, regression=regression, progress=True)
        preds = to_predictions(logits, regression)
        if job.mapping is not None:
            preds = job.mapping.map_predictions(preds)
        metrics = score(job.spec, preds, job.labels)
        groups = (group_metrics(job.spec, preds, job.labels, job.groups, job.group_field)
                  if job.groups is not None else None)
        records.append(eval_record(job.name, job.source, len(job.texts), metrics,
                                   job.mapping.label_map if job.mapping else None, groups))
    return records


def _print(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("eval", "n", "metrics", title=record["source"].get("task") or record["source"].get("file"))
    table.add_row(record["name"], str(record["n"]), _fmt(record["metrics"]))
    console.print(table)
    groups = record.get("groups")
    if groups:
        by_group = Table(groups["field"], "n", "metrics", title=f"{record['name']} by {groups['field']}")
        for value, m in groups["values"].items():
            by_group.add_row(value, str(m["n"]), _fmt({k: v for k, v in m.items() if k != "n"}))
        console.print(by_group)


def _fmt(metrics: dict) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in metrics.items())
