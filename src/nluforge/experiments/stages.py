"""The building blocks of a run's stages that touch torch: train, save, evaluate, measure.

:func:`train_stage` is the one training stage (ordinary training and PET distillation use it). The
others take the :class:`~nluforge.experiments.state.Prepared` run and return plain values. Nothing here
imports the pipeline.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
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


@dataclass
class Trained:
    """What :func:`train_stage` returns."""

    model: Any  # unwrapped from the accelerator
    fit: Any  # nluforge.train.loop.FitResult
    device: Any
    accelerator: Any
    peak: Any  # PeakMemory (.mb, .kind)
    ckpt_mb: float | None
    memory: dict[str, Any] | None = None  # memory_split(): the peak by part, and the optimizer's state


def train_stage(state, *, model=None, train=None, train_cfg=None, lr: float | None = None, loss_fn=None,
                hooks=None, sampler=None, update_step=None, evaluate=None, checkpoint_dir: Path | None = None,
                log_fields: dict[str, Any] | None = None) -> Trained:
    """Fit a model through :func:`nluforge.train.fit`: the one training stage every recipe reuses.

    Defaults train the run's own model (``state.prep.model``) on ``state.encoded["train"]`` with the
    run's optimizer, schedule, the method's hooks and model selection on the first dev split. PET
    distillation (and later adversarial or DP training) passes its own ``model``/``train``/``loss_fn``/
    ``hooks``/``sampler``/``update_step``/``train_cfg``/``lr``. Only the main process writes the log and checkpoints.
    """
    from nluforge.core.runtime import device_and_accelerator, is_main_process
    from nluforge.eval.meters import PeakMemory
    from nluforge.models.loading import dir_size_mb
    from nluforge.optim import OPTIMIZERS, build_optimizer, linear_schedule
    from nluforge.train import fit
    from nluforge.train.loop import total_steps
    from nluforge.train.update_steps import for_optimizer

    prep, cfg = state.prep, state.cfg
    train = state.encoded["train"] if train is None else train
    train_cfg = train_cfg or cfg.train
    own_model = model is None  # the run's own model gets the method's per-step hooks
    device, acc = device_and_accelerator(cfg.train.precision)
    model = (prep.model if own_model else model).to(device)
    if own_model and getattr(prep.method, "prefit", None) is not None:  # the method trains itself: no loop
        return _prefit(prep, model, train, device, acc)
    optimizer = build_optimizer(cfg.optimizer, model, lr=lr or learning_rate(prep),
                                weight_decay=cfg.train.weight_decay, **cfg.optimizer_params)
    steps = total_steps(train_cfg, len(train), acc.num_processes)
    scheduler = linear_schedule(optimizer, total_steps=steps, warmup_ratio=cfg.train.warmup_ratio)
    if hooks is None and own_model and getattr(prep.method, "train_hooks", None):
        hooks = prep.method.train_hooks(model, prep.method_cfg, steps)
    model, optimizer = acc.prepare(model, optimizer)
    if evaluate is None:
        first = eval_split_names_for_selection(prep)

        def evaluate(m):
            return split_metrics(prep, m, state.encoded[first], first)

    if update_step is None and OPTIMIZERS.entry(cfg.optimizer).meta.get("update_step") is not None:
        update_step = for_optimizer(cfg.optimizer)  # MeZO: forwards only; AdaHessian: create_graph
    # seams given only when set, so fit's own defaults apply otherwise
    seams = {k: v for k, v in (("loss_fn", loss_fn), ("sampler", sampler), ("update_step", update_step))
             if v is not None}
    checkpoint_dir = checkpoint_dir or state.run_dir / "checkpoints"
    extra = log_fields or {}
    log_fh = open(state.run_dir / LOG_FILE, "a", encoding="utf-8") if is_main_process() else None
    peak = PeakMemory(device)
    selection = evaluate

    def evaluate_between_steps(m):  # left out of the training peak: it is the model's eval-time memory
        with peak.paused():
            return selection(m)

    try:
        with peak:
            result = fit(model, train, cfg=train_cfg, seed=cfg.seed, optimizer=optimizer, scheduler=scheduler,
                         pad_id=pad_id(prep.tokenizer), accelerator=acc, evaluate=evaluate_between_steps,
                         primary=prep.spec.primary_metric, checkpoint_dir=checkpoint_dir, resume=state.resume,
                         hooks=hooks, log=_logger(log_fh, extra), show_progress=state.show_progress, **seams)
    finally:
        if log_fh is not None:
            log_fh.close()
    ckpt_mb = dir_size_mb(checkpoint_dir) if checkpoint_dir.exists() else None
    from nluforge.optim import OPTIMIZERS

    gradients = OPTIMIZERS.entry(cfg.optimizer).meta.get("update_step") != "zeroth_order"
    memory = memory_split(acc.unwrap_model(model), optimizer, peak, gradients=gradients)
    return Trained(acc.unwrap_model(model), result, device, acc, peak, ckpt_mb, memory)


def memory_split(model, optimizer, peak, *, gradients: bool) -> dict[str, Any]:
    """The training peak by part (MB): weights, gradients, optimizer state, activations (see ``Cost``).

    Weights, gradients and state are counted from tensors; activations are what the peak holds beyond
    them. On CPU the peak is the process's RSS, so the RSS when training started (weights and the
    runtime) is taken off instead of the weights, and the runtime is reported on its own.
    """
    from nluforge.optim import optimizer_info, state_mb

    def mb(tensors) -> float:
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20

    weights = mb(list(model.parameters()) + list(model.buffers()))
    grads = mb(p for p in model.parameters() if p.requires_grad) if gradients else 0.0
    state = state_mb(optimizer)
    split = {"optimizer_state_mb": round(state, 3), "memory_weights_mb": round(weights, 3),
             "memory_gradients_mb": round(grads, 3), "memory_split_kind": peak.kind}
    if peak.kind == "cuda_max_allocated":
        split["memory_activations_mb"] = round(max(peak.mb - weights - grads - state, 0.0), 3)
        split["memory_split_kind"] = "cuda_allocated"
    else:
        split["memory_activations_mb"] = round(max(peak.mb - peak.start_mb - grads - state, 0.0), 3)
        split["memory_runtime_mb"] = round(max(peak.start_mb - weights, 0.0), 3)
    split["optimizer"] = optimizer_info(optimizer)
    return split


def _logger(fh, extra: dict[str, Any]):
    if fh is None:
        return lambda rec: None

    def log(rec: dict[str, Any]) -> None:
        fh.write(json.dumps({**rec, **extra}) + "\n")
        fh.flush()

    return log


def _prefit(prep, model, train, device, acc) -> Trained:
    """Run a method's own training (linear probe: a closed-form head; SetFit) instead of ``fit``."""
    from nluforge.eval.meters import PeakMemory
    from nluforge.train.loop import FitResult

    with PeakMemory(device) as peak:
        done = prep.method.prefit(model, prep.method_cfg, train, tokenizer=prep.tokenizer,
                                  task=prep.spec, pad_id=pad_id(prep.tokenizer),
                                  batch_size=prep.cfg.train.eval_batch_size, seed=prep.cfg.seed)
    rate = done.examples / done.train_time_s if done.train_time_s > 0 else 0.0
    history = [{"prefit": done.summary}] if done.summary else []
    fit_result = FitResult(steps=done.steps, train_time_s=done.train_time_s, examples_seen=done.examples,
                           examples_per_s=rate, best_metric=None, best_step=None, stopped_early=False,
                           history=history)
    return Trained(model, fit_result, device, acc, peak, None)


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
    from nluforge.tasks.custom import write_task_record

    saver = getattr(prep.method, "save", base.save)
    tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=run_dir))
    with quiet_transformers():
        saver(model, tmp)
        prep.tokenizer.save_pretrained(tmp)
    write_task_record(tmp, prep.spec)  # the labels the model predicts, for eval/predict of custom tasks
    return atomic_replace_dir(tmp, run_dir / "model")


_MEMORY_FIELDS = ("optimizer_state_mb", "memory_weights_mb", "memory_gradients_mb", "memory_activations_mb",
                  "memory_runtime_mb", "memory_split_kind")


def measure_cost(prep, model, enc, fit_result, peak, model_dir: Path, ckpt_mb: float | None,
                 memory: dict[str, Any] | None = None) -> Cost:
    from nluforge.models.loading import dir_size_mb
    from nluforge.models.params import count_params, size_figures

    latency = latency_ms(prep, model, enc)
    sizes = size_figures(model_dir, base=prep.cfg.model)
    return Cost(total_params=count_params(model), trainable_params=count_params(model, trainable_only=True),
                peak_memory_mb=round(peak.mb, 1), peak_memory_kind=peak.kind,
                train_time_s=round(fit_result.train_time_s, 3),
                train_examples_per_s=round(fit_result.examples_per_s, 2),
                train_examples=fit_result.examples_seen, latency_ms_bs1=latency.get(1),
                latency_ms_bs32=latency.get(32), model_size_mb=round(dir_size_mb(model_dir), 3),
                checkpoint_size_mb=round(ckpt_mb, 3) if ckpt_mb is not None else None,
                delta_size_mb=_round(sizes.delta_mb), standalone_size_mb=_round(sizes.standalone_mb),
                **{k: v for k, v in (memory or {}).items() if k in _MEMORY_FIELDS})


def _round(mb: float | None) -> float | None:
    return round(mb, 3) if mb is not None else None


def latency_ms(prep, model, enc) -> dict[int, float]:
    """Eval latency in ms per example at batch 1 and 32 (empty when ``eval.latency`` is off)."""
    from nluforge.eval.meters import measure_latency

    cfg = prep.cfg
    if not cfg.eval.latency:
        return {}
    return {bs: round(measure_latency(model, enc, batch_size=bs, pad_id=pad_id(prep.tokenizer),
                                      regression=prep.spec.is_regression,
                                      n_examples=max(cfg.eval.latency_examples, bs * 2)), 4) for bs in (1, 32)}


def load_run(run_dir: Path, *, model_dir: Path | None = None):
    """A finished run's model: ``(cfg, spec, tokenizer, model, method_module, method_cfg)``.

    Kept for callers that unpack a tuple; :func:`nluforge.experiments.servable.load_servable` returns
    the same (and more) as a dataclass, and also loads derived (compressed) runs.
    """
    from nluforge.experiments.servable import load_servable

    s = load_servable(run_dir, model_dir=model_dir)
    return s.cfg, s.spec, s.tokenizer, s.model, s.method, s.method_cfg
