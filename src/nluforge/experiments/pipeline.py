"""One cell of an experiment: load → adapt → train → compress → evaluate → attack → audit.

:func:`prepare` does everything that can fail because of the user's input (task, data files, model,
method options) and writes nothing, so a bad input never leaves a run directory behind.
:func:`execute` trains and measures, writing the run directory of DESIGN.md with ``result.json`` last.
:func:`run_cell` is what grid runners call: it never raises for a failing cell, it records
``status: failed`` and the error instead.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from nluforge.core.errors import UserError
from nluforge.core.io import atomic_write_text
from nluforge.experiments.config import RunConfig
from nluforge.results import Cost, RunInfo, RunResult, write_result

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class Prepared:
    """A run ready to train: data, tokenizer and adapted model, all in memory."""

    cfg: RunConfig
    spec: Any  # nluforge.tasks.TaskSpec
    splits: dict[str, Any]  # split name → nluforge.tasks.Split (train and evaluation splits)
    tokenizer: Any
    model: Any
    method: Any  # the method module
    method_cfg: Any
    notes: list[str]
    unlabeled: list[tuple[str, ...]] | None = None  # prompt_based distill: texts to soft-label (PET)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _task_kwargs(cfg: RunConfig) -> dict[str, Any]:
    d = cfg.data
    return dict(data_dir=d.data_dir, train_file=d.train_file, validation_file=d.validation_file,
                test_file=d.test_file, text_fields=d.text_fields, label_field=d.label_field,
                max_train_samples=d.max_train_samples, max_eval_samples=d.max_eval_samples,
                k_shot=d.k_shot, seed=cfg.seed, advglue_file=cfg.eval.advglue_file)


def load_data(cfg: RunConfig):
    """The task's train split and its evaluation splits (plus AdvGLUE sets, when found)."""
    from nluforge.tasks import get_task, load_task

    data = load_task(cfg.task, **_task_kwargs(cfg))
    spec = data.spec
    if spec.eval_only:
        raise UserError(f"task '{cfg.task}' is evaluation-only; train on '{spec.base}' and evaluate with "
                        f"`nluforge eval RUN --task {cfg.task}`")
    if "train" not in data.splits:
        raise UserError(f"task '{cfg.task}' has no train split; give --train-file or a GLUE --data-dir")
    splits = dict(data.splits)
    notes: list[str] = list(data.notes)
    if cfg.eval.advglue:
        for adv in spec.advglue:
            try:
                adv_data = load_task(get_task(adv), data_dir=cfg.data.data_dir, advglue_file=cfg.eval.advglue_file)
                splits[adv] = adv_data.splits["validation"]
            except UserError as err:
                notes.append(f"{adv} not evaluated: {err}")
    return spec, splits, notes


def eval_split_names(cfg: RunConfig, spec, splits: dict[str, Any]) -> list[str]:
    names = list(cfg.eval.splits or spec.eval_splits)
    missing = [n for n in names if n not in splits]
    if missing:
        raise UserError(f"task '{spec.name}' has no split '{missing[0]}'; available: {', '.join(splits)}")
    return names + [n for n in spec.advglue if n in splits]


def build_model(cfg: RunConfig, spec, tokenizer):
    """The pretrained model with the head the method needs, then adapted by the method."""
    from nluforge.methods import method_config, method_module
    from nluforge.models.loading import load_model

    module = method_module(cfg.method)
    method_cfg = method_config(cfg.method, cfg.method_params)
    base = load_model(cfg.model, num_labels=spec.num_labels, label_names=spec.label_names,
                      head=getattr(module, "HEAD", "sequence_classification"),
                      attn_implementation=getattr(module, "ATTN_IMPLEMENTATION", None))
    model = module.adapt(base, method_cfg, tokenizer=tokenizer, task=spec)
    return model, module, method_cfg


def prepare(cfg: RunConfig) -> Prepared:
    """Load data, tokenizer and model and apply the method; raises UserError on bad input."""
    from nluforge.methods import method_config
    from nluforge.tasks import get_task

    checked = method_config(cfg.method, cfg.method_params)  # cheap checks first: bad names fail in a second
    if not cfg.data.train_file:
        get_task(cfg.task)

    import torch

    from nluforge.models.loading import load_tokenizer

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    spec, splits, notes = load_data(cfg)
    eval_split_names(cfg, spec, splits)
    unlabeled = None
    if getattr(checked, "distill", False):
        from nluforge.experiments.pet_distill import load_unlabeled

        unlabeled, note = load_unlabeled(cfg, checked, spec, splits["train"])
        notes.append(note)
    tokenizer = load_tokenizer(cfg.model)
    torch.manual_seed(cfg.seed)  # the head's (and the method's) initialisation
    model, module, method_cfg = build_model(cfg, spec, tokenizer)
    return Prepared(cfg, spec, splits, tokenizer, model, module, method_cfg, notes, unlabeled)


def encode_splits(prep: Prepared, names: list[str]):
    from nluforge.models.inputs import encode

    fmt = getattr(prep.method, "format_inputs", None)
    formatter = (lambda t: fmt(t, prep.method_cfg, prep.tokenizer, prep.spec)) if fmt else None
    return {n: encode(prep.splits[n].texts, prep.splits[n].labels, prep.tokenizer, prep.cfg.data.max_length,
                      formatter) for n in names}


def _device_and_accelerator(cfg: RunConfig):
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    cuda = torch.cuda.is_available()
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision != "fp32" and not cuda:
        warnings.warn(f"{precision} autocast on CPU is usually much slower than fp32", stacklevel=2)
    AcceleratorState._reset_state(reset_partial_state=False)  # a grid runs many cells in one process
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    acc = Accelerator(mixed_precision=mixed, gradient_accumulation_steps=1)
    return acc.device, acc


def execute(prep: Prepared, run_dir: Path, *, resume: bool = False, progress: Progress | None = None,
            show_progress: bool = True) -> RunResult:
    """Train and measure ``prep``; write ``run_dir`` with ``result.json`` last."""
    cfg = prep.cfg
    started, t0 = _now(), time.perf_counter()
    _start_run_dir(run_dir, cfg, resume)
    stage = progress or (lambda _name: None)
    stage("train")
    names = eval_split_names(cfg, prep.spec, prep.splits)
    encoded = encode_splits(prep, ["train", *names])
    from nluforge.experiments import stages

    model, fit_result, device, peak, ckpt_mb = stages.train(prep, encoded, run_dir, resume=resume,
                                                            show_progress=show_progress)
    distilled = None
    if getattr(prep.method_cfg, "distill", False):  # PET: the pattern ensemble teaches a plain classifier
        stage("distill")
        from nluforge.experiments.pet_distill import distill

        distilled = distill(prep, model, encoded, names, fit_result, peak, run_dir, resume=resume,
                            show_progress=show_progress)
        prep.model = model = distilled.model  # the run's model from here on: saved, evaluated, measured
    stage("save")
    model_dir = stages.save_model(prep, model, run_dir)
    stage("evaluate")
    metrics = {"trained": stages.evaluate(prep, model, encoded, names, run_dir)}
    cost_fit, cost_peak = (fit_result, peak) if distilled is None else (distilled.fit_result, distilled.peak)
    if distilled is not None:
        metrics["pet_ensemble"] = distilled.ensemble_metrics
    cost = stages.measure_cost(prep, model, encoded[names[0]], cost_fit, cost_peak, model_dir, ckpt_mb)
    for kind in ("compress", "attack", "audit"):
        if getattr(cfg, kind):
            raise UserError(f"{kind} steps are not available in this version of nluforge; remove '{kind}'")
    if not cfg.train.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    result = _result(cfg, "completed", None, started, t0, metrics, cost, device)
    result.meta["notes"] = prep.notes
    result.meta["train"] = {"steps": fit_result.steps, "best_step": fit_result.best_step,
                            "stopped_early": fit_result.stopped_early, "lr": stages.learning_rate(prep)}
    if distilled is not None:
        result.meta["distill"] = distilled.summary
    write_result(run_dir, result)
    stage("done")
    return result


def _start_run_dir(run_dir: Path, cfg: RunConfig, resume: bool) -> None:
    """A fresh run directory (or the existing one, to resume); never a stale result.json."""
    result = run_dir / "result.json"
    if result.exists():
        result.unlink()  # the run is redone: it must not look finished meanwhile
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _result(cfg, status, error, started, t0, metrics, cost, device) -> RunResult:
    from nluforge.experiments.meta import run_meta

    info = RunInfo(id=cfg.run_id(), slug=cfg.slug(), status=status, error=error, started=started,
                   finished=_now(), wall_time_s=round(time.perf_counter() - t0, 3))
    meta = run_meta(device) if device is not None else {}
    return RunResult(run_info=info, config=cfg.to_dict(), metrics=metrics, cost=cost or Cost(), meta=meta)


def run_cell(cfg: RunConfig, results_dir: str | Path, *, progress: Progress | None = None,
             resume: bool = False, show_progress: bool = False) -> RunResult:
    """Run one grid cell into ``results_dir/<run_id>/``; a failure becomes a ``failed`` result."""
    run_dir = Path(results_dir) / cfg.run_id()
    started, t0 = _now(), time.perf_counter()
    try:
        (progress or (lambda _s: None))("load")
        prep = prepare(cfg)
        return execute(prep, run_dir, resume=resume, progress=progress, show_progress=show_progress)
    except Exception as err:  # noqa: BLE001 - a cell's failure is data, the grid goes on
        message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        run_dir.mkdir(parents=True, exist_ok=True)
        if not isinstance(err, UserError):
            atomic_write_text(run_dir / "error.txt", traceback.format_exc())
        result = _result(cfg, "failed", message, started, t0, {}, None, None)
        write_result(run_dir, result)
        return result


def read_run_config(run_dir: Path) -> RunConfig:
    """The resolved config of a run directory."""
    from nluforge.experiments.config import resolve

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    return resolve(yaml.safe_load(path.read_text()) or {})

