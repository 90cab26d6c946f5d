"""The stages of a cell that touch torch: train, save, evaluate, measure.

Each takes the :class:`~nluforge.experiments.pipeline.Prepared` run and returns plain values, so the
pipeline reads as a list of stages.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nluforge.core.io import atomic_replace_dir, atomic_write
from nluforge.results import Cost

LOG_FILE = "log.jsonl"
PREDICTIONS_FILE = "predictions.jsonl"


def learning_rate(prep) -> float:
    """The configured lr, else the method's recommended default."""
    from nluforge.methods import METHODS

    return prep.cfg.train.lr or METHODS.entry(prep.cfg.method).meta["default_lr"]


def train(prep, encoded: dict[str, Any], run_dir: Path, *, resume: bool, show_progress: bool):
    """Fit the model; returns (model, FitResult, device, PeakMemory, checkpoint size in MB)."""
    from nluforge.eval.meters import PeakMemory
    from nluforge.experiments.pipeline import _device_and_accelerator
    from nluforge.models.loading import dir_size_mb
    from nluforge.optim import build_optimizer, linear_schedule
    from nluforge.train import fit
    from nluforge.train.loop import total_steps

    cfg = prep.cfg
    device, acc = _device_and_accelerator(cfg)
    model = prep.model.to(device)
    if getattr(prep.method, "prefit", None) is not None:  # the method trains itself: no gradient loop
        return _prefit(prep, model, encoded, device)
    optimizer = build_optimizer(cfg.optimizer, model, lr=learning_rate(prep),
                                weight_decay=cfg.train.weight_decay, **cfg.optimizer_params)
    steps = total_steps(cfg.train, len(encoded["train"]), acc.num_processes)
    scheduler = linear_schedule(optimizer, total_steps=steps, warmup_ratio=cfg.train.warmup_ratio)
    hooks_fn = getattr(prep.method, "train_hooks", None)
    hooks = hooks_fn(model, prep.method_cfg, steps) if hooks_fn else None
    model, optimizer = acc.prepare(model, optimizer)
    first_eval = eval_split_names_for_selection(prep)

    def evaluate_fn(m):
        return split_metrics(prep, m, encoded[first_eval], first_eval)

    log_path = run_dir / LOG_FILE
    with open(log_path, "a", encoding="utf-8") as log_fh, PeakMemory(device) as peak:
        result = fit(model, encoded["train"], cfg=cfg.train, seed=cfg.seed, optimizer=optimizer,
                     scheduler=scheduler, pad_id=pad_id(prep.tokenizer), accelerator=acc,
                     evaluate=evaluate_fn, primary=prep.spec.primary_metric,
                     checkpoint_dir=run_dir / "checkpoints", resume=resume, hooks=hooks,
                     log=lambda rec: (log_fh.write(json.dumps(rec) + "\n"), log_fh.flush()),
                     show_progress=show_progress)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_mb = dir_size_mb(ckpt_dir) if ckpt_dir.exists() else None
    return acc.unwrap_model(model), result, device, peak, ckpt_mb


def _prefit(prep, model, encoded: dict[str, Any], device):
    """Run a method's own training (linear probe: a closed-form head; SetFit) instead of ``fit``."""
    from nluforge.eval.meters import PeakMemory
    from nluforge.train.loop import FitResult

    with PeakMemory(device) as peak:
        done = prep.method.prefit(model, prep.method_cfg, encoded["train"], tokenizer=prep.tokenizer,
                                  task=prep.spec, pad_id=pad_id(prep.tokenizer),
                                  batch_size=prep.cfg.train.eval_batch_size, seed=prep.cfg.seed)
    rate = done.examples / done.train_time_s if done.train_time_s > 0 else 0.0
    history = [{"prefit": done.summary}] if done.summary else []
    return model, FitResult(steps=done.steps, train_time_s=done.train_time_s, examples_seen=done.examples,
                            examples_per_s=rate, best_metric=None, best_step=None, stopped_early=False,
                            history=history), device, peak, None


def eval_split_names_for_selection(prep) -> str:
    """Model selection (best checkpoint, early stopping) uses the first dev split."""
    return (prep.cfg.eval.splits or prep.spec.eval_splits)[0]


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def split_metrics(prep, model, enc, name: str, *, logits: np.ndarray | None = None) -> dict[str, float]:
    from nluforge.eval.predict import predict, to_predictions
    from nluforge.tasks import compute_metrics, get_task

    spec = get_task(name) if name in prep.spec.advglue else prep.spec
    if logits is None:
        logits = predict(model, enc, batch_size=prep.cfg.train.eval_batch_size, pad_id=pad_id(prep.tokenizer),
                         regression=spec.is_regression)
    preds = to_predictions(logits, spec.is_regression)
    return {k: float(v) for k, v in compute_metrics(spec, preds, np.asarray(enc.labels)).items()}


def evaluate(prep, model, encoded: dict[str, Any], names: list[str], run_dir: Path | None):
    """Metrics per split; per-example predictions to ``predictions.jsonl`` when asked."""
    from nluforge.eval.predict import predict

    metrics: dict[str, dict[str, float]] = {}
    lines: list[str] = []
    for name in names:
        enc = encoded[name]
        regression = prep.spec.is_regression
        logits = predict(model, enc, batch_size=prep.cfg.train.eval_batch_size, pad_id=pad_id(prep.tokenizer),
                         regression=regression)
        metrics[name] = split_metrics(prep, model, enc, name, logits=logits)
        for i, (label, row) in enumerate(zip(enc.labels, logits, strict=True)):
            pred = float(row) if regression else int(np.argmax(row))
            lines.append(json.dumps({"split": name, "idx": i, "label": label, "prediction": pred,
                                     "logits": np.atleast_1d(row).round(5).tolist()}))
    if run_dir is not None and prep.cfg.eval.save_predictions:
        text = "\n".join(lines) + "\n"
        atomic_write(run_dir / PREDICTIONS_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    return metrics


def save_model(prep, model, run_dir: Path) -> Path:
    """Save to ``run_dir/model`` (peft folder, HF folder or method state) with the tokenizer."""
    from nluforge.methods import base
    from nluforge.models.loading import quiet_transformers

    saver = getattr(prep.method, "save", base.save)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=run_dir))
    with quiet_transformers():
        saver(model, tmp)
        prep.tokenizer.save_pretrained(tmp)
    return atomic_replace_dir(tmp, run_dir / "model")


def measure_cost(prep, model, enc, fit_result, peak, model_dir: Path, ckpt_mb: float | None) -> Cost:
    from nluforge.eval.meters import measure_latency
    from nluforge.models.loading import dir_size_mb
    from nluforge.models.params import count_params

    cfg = prep.cfg
    latency = {}
    if cfg.eval.latency:
        for bs in (1, 32):
            latency[bs] = round(measure_latency(model, enc, batch_size=bs, pad_id=pad_id(prep.tokenizer),
                                                regression=prep.spec.is_regression,
                                                n_examples=max(cfg.eval.latency_examples, bs * 2)), 4)
    return Cost(total_params=count_params(model), trainable_params=count_params(model, trainable_only=True),
                peak_memory_mb=round(peak.mb, 1), peak_memory_kind=peak.kind,
                train_time_s=round(fit_result.train_time_s, 3),
                train_examples_per_s=round(fit_result.examples_per_s, 2),
                train_examples=fit_result.examples_seen, latency_ms_bs1=latency.get(1),
                latency_ms_bs32=latency.get(32), model_size_mb=round(dir_size_mb(model_dir), 3),
                checkpoint_size_mb=round(ckpt_mb, 3) if ckpt_mb is not None else None)


def load_run(run_dir: Path, *, model_dir: Path | None = None):
    """Rebuild a finished run's model from its ``config.yaml`` and ``model/`` folder.

    Returns ``(cfg, spec, tokenizer, model, method_module, method_cfg)``.
    """
    from nluforge.core.errors import UserError
    from nluforge.experiments.pipeline import read_run_config
    from nluforge.methods import base, method_config, method_module
    from nluforge.models.loading import load_model
    from nluforge.tasks import get_task

    cfg = read_run_config(run_dir)
    model_dir = model_dir or Path(run_dir) / "model"
    if not model_dir.is_dir():
        raise UserError(f"{run_dir} has no saved model (model/ is missing); did the run finish?")
    spec = get_task(cfg.task) if cfg.task != "custom" else None
    if spec is None:
        raise UserError("evaluating a custom-task run needs --task-file options; not supported yet")
    module = method_module(cfg.method)
    method_cfg = method_config(cfg.method, cfg.method_params)
    tokenizer = _run_tokenizer(model_dir, cfg.model)
    base_model = load_model(cfg.model, num_labels=spec.num_labels, label_names=spec.label_names,
                            head=getattr(module, "HEAD", "sequence_classification"),
                            attn_implementation=getattr(module, "ATTN_IMPLEMENTATION", None))
    loader = getattr(module, "load", None)
    try:
        if loader is not None:
            model = loader(model_dir, base_model, method_cfg, tokenizer=tokenizer, task=spec)
        else:
            model = base.load(model_dir, base_model, method_cfg, module.adapt, tokenizer=tokenizer, task=spec)
    except UserError:
        raise
    except Exception as err:  # safetensors, peft and transformers each raise their own types
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"the saved model in {model_dir} is corrupt or does not match the run's config "
                        f"({first}); retrain the run") from None
    return cfg, spec, tokenizer, model.eval(), module, method_cfg


def _run_tokenizer(model_dir: Path, model: str):
    """The tokenizer saved with the run (adapter folders have no config.json), else the model's."""
    from transformers import AutoTokenizer

    from nluforge.models.loading import load_tokenizer, quiet_transformers

    if (Path(model_dir) / "tokenizer_config.json").is_file():
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(str(model_dir))
    return load_tokenizer(model)
