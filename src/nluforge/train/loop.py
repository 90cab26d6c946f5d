"""The training loop: one explicit function, built on ``accelerate``.

Seams (plain callables, no event framework); the loop knows no method:

- ``loss_fn(model, batch) -> (loss, logits)``: distillation, adversarial training.
- ``batch_transform(batch) -> batch`` and ``evaluate(model) -> metrics``.
- ``sampler(seed, epoch) -> batches``: the epoch's batches of example indices, a pure function of
  ``(seed, epoch)`` (:mod:`nluforge.train.samplers`). Default: length-grouped batches; a
  :class:`~nluforge.train.samplers.PoissonSampler` gives DP-SGD's variable, possibly empty batches.
- ``update_step(model, batch, ctx) -> loss``: what one micro-batch does. The default,
  :func:`default_update_step`, runs forward and backward, and after the step's last micro-batch clips,
  steps the optimizer and zeroes the gradients; a zeroth-order (MeZO) or second-order (AdaHessian)
  step replaces it whole. The loop counts steps, steps the scheduler, logs, evaluates and checkpoints.
- ``hooks``: a method's :class:`~nluforge.methods.base.TrainHooks`-like object (``before_forward``,
  ``after_backward``, ``after_step``, ``on_train_end``, and ``state_dict``/``load_state_dict`` when it
  has state that a checkpoint must carry, as AdaLoRA's importance scores).

Features: dynamic padding with length-grouped batches (sorted within groups of 50 batches, then
shuffled; ``group_by_length`` sets the group size), gradient accumulation, linear warmup then linear
decay (the scheduler is built by the caller), evaluation every N steps or once per epoch,
keeping the best weights, early stopping, bf16/fp16 autocast on CUDA only (bf16 autocast is ~20x
slower on this kind of AVX2-only CPU), multi-process runs (every process takes the same number of
steps; only the main process writes), and exact resume from atomic checkpoints: the batch order of
an epoch is a function of ``(seed, epoch)`` and the loop state (:class:`LoopState`), optimizer,
scheduler, RNG and hook states are checkpointed, so a run killed with ``kill -9`` and resumed takes
only the remaining steps and ends with the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nluforge.core.errors import UserError
from nluforge.models.inputs import TRAINER_GROUP_BATCHES, Encoded, collate
from nluforge.train import checkpoint as ckpt
from nluforge.train.samplers import LengthGroupedSampler, Sampler, shard

Batch = dict[str, torch.Tensor]


@dataclass
class FitResult:
    steps: int
    train_time_s: float
    examples_seen: int
    examples_per_s: float
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoopState:
    """Where training stands. Checkpointed as JSON; a resumed run continues from here."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of the current epoch this process has taken
    examples: int = 0  # examples seen, all processes together (batches repeated to even out processes count again)
    train_time_s: float = 0.0  # wall time since the start, evaluations included, carried over a resume
    eval_time_s: float = 0.0
    best: float | None = None  # best value of the primary metric so far
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the best one (early stopping)
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per evaluation

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopState:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise UserError(f"checkpoint loop state has unknown fields {unknown} (written by another version of "
                            "nluforge?); rerun without --resume")
        return cls(**data)


@dataclass
class StepContext:
    """What an ``update_step`` works with. The loop sets ``step``, ``first`` and ``sync`` before each call."""

    optimizer: Any
    accelerator: Any
    loss_fn: Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]]
    hooks: Any
    grad_accum: int
    max_grad_norm: float | None
    seed: int
    step: int = 0  # optimizer steps taken before this one (the step number the hooks get)
    first: bool = True  # the first micro-batch of this optimizer step
    sync: bool = True  # the last micro-batch of this optimizer step: take the step


UpdateStep = Callable[[nn.Module, "Batch | None", StepContext], "torch.Tensor | None"]


def default_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy for classification, MSE for regression (float labels)."""
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits  # (B, C)
    if labels.dtype.is_floating_point:
        return F.mse_loss(logits.squeeze(-1).float(), labels), logits
    return F.cross_entropy(logits.float(), labels), logits


def default_update_step(model: nn.Module, batch: Batch | None, ctx: StepContext) -> torch.Tensor | None:
    """Forward and backward of one micro-batch; after the step's last one, clip, step and zero the gradients.

    The hooks run where methods expect them: ``before_forward`` before the step's first forward,
    ``after_backward`` once the gradients are complete (before clipping), ``after_step`` after
    ``optimizer.step()`` and before ``zero_grad()``. ``batch`` is None for an empty batch (Poisson
    sampling): nothing happens, and the loop still counts the step.
    """
    if batch is None:
        return None
    if ctx.first:
        _call_hook(ctx.hooks, "before_forward", ctx.step)
    with ctx.accelerator.autocast():
        loss, _ = ctx.loss_fn(model, batch)  # loss: () scalar
    ctx.accelerator.backward(loss / ctx.grad_accum)
    if ctx.sync:
        _call_hook(ctx.hooks, "after_backward", ctx.step)
        if ctx.max_grad_norm:
            ctx.accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], ctx.max_grad_norm)
        ctx.optimizer.step()
        _call_hook(ctx.hooks, "after_step", ctx.step)  # e.g. AdaLoRA's update_and_allocate: needs the gradients
        ctx.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int, world: int = 1) -> int:
    """Optimizer steps per epoch; with ``world`` processes each takes ``ceil(batches / world)`` batches."""
    batches = math.ceil(math.ceil(n_examples / batch_size) / world)
    return max(1, math.ceil(batches / grad_accum))


def total_steps(cfg, n_examples: int, world: int = 1) -> int:
    """Optimizer steps for the run: ``max_steps`` or ``epochs`` worth of batches."""
    per_epoch = steps_per_epoch(n_examples, cfg.batch_size, cfg.grad_accum, world)
    return cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))


def fit(
    model: nn.Module,
    train: Encoded,
    *,
    cfg,  # nluforge.experiments.config.TrainConfig (duck-typed: train does not import experiments)
    seed: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    pad_id: int,
    accelerator,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    primary: str = "accuracy",
    greater_is_better: bool = True,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    loss_fn: Callable[[nn.Module, Batch], tuple[torch.Tensor, torch.Tensor]] = default_loss,
    batch_transform: Callable[[Batch], Batch] | None = None,
    hooks: Any = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    show_progress: bool = True,
    sampler: Sampler | None = None,
    update_step: UpdateStep = default_update_step,
) -> FitResult:
    """Train ``model`` in place and return what happened. See the module docstring."""
    regression = bool(train.labels) and isinstance(train.labels[0], float)
    world, rank = accelerator.num_processes, accelerator.process_index
    sampler = sampler if sampler is not None else _default_sampler(train, cfg)
    _check_inputs(train, sampler, cfg, world)
    n_steps = total_steps(cfg, len(train), world)
    state = LoopState()
    torch.manual_seed(seed)
    codec = _checkpoint_codec(cfg, accelerator.unwrap_model(model)) if checkpoint_dir is not None else None
    calib_loss = _calibration_loss(model, train, sampler, seed, pad_id, regression, batch_transform,
                                   accelerator.device, loss_fn, codec)
    if resume and checkpoint_dir is not None:
        restored = ckpt.load_checkpoint(checkpoint_dir, accelerator.unwrap_model(model), optimizer, scheduler, hooks,
                                        codec=codec)
        state = LoopState.from_json(restored) if restored is not None else state
    ctx = StepContext(optimizer=optimizer, accelerator=accelerator, loss_fn=loss_fn, hooks=hooks,
                      grad_accum=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm, seed=seed)
    main = accelerator.is_main_process
    best_path = checkpoint_dir / ckpt.BEST if checkpoint_dir is not None else None
    best_in_memory: dict[str, torch.Tensor] | None = None
    bar = _progress_bar(n_steps, state.step, show_progress and main)
    model.train()
    t_start = time.perf_counter() - state.train_time_s

    def run_eval() -> bool:
        """Evaluate, track the best weights; return True when early stopping triggers."""
        nonlocal best_in_memory
        t_eval = time.perf_counter()
        metrics = evaluate(accelerator.unwrap_model(model))
        model.train()
        value = metrics.get(primary)
        state.history.append({"step": state.step, **metrics})
        improved = value is not None and (state.best is None or
                                          (value > state.best if greater_is_better else value < state.best))
        if improved:
            state.best, state.best_step, state.bad_evals = value, state.step, 0
            if best_path is not None and main:  # restored from this file: no second copy of the weights held
                ckpt.save_weights(accelerator.unwrap_model(model), best_path)
                best_in_memory = None
            else:  # on the CPU: a copy on the accelerator would count against the training peak
                weights = ckpt.trainable_state(accelerator.unwrap_model(model))
                best_in_memory = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
        else:
            state.bad_evals += 1
        if log:
            log({"event": "eval", "step": state.step, **metrics})
        state.eval_time_s += time.perf_counter() - t_eval
        patience = cfg.early_stopping_patience
        return bool(patience and state.bad_evals >= patience)

    def save() -> None:
        if checkpoint_dir is not None and main:  # one writer; the other processes hold the same state
            state.train_time_s = time.perf_counter() - t_start
            ckpt.save_checkpoint(checkpoint_dir, state.step, accelerator.unwrap_model(model), optimizer,
                                 scheduler, state.to_json(), hooks, codec=codec, calib_loss=calib_loss)

    done = state.step >= n_steps or state.stopped_early
    while not done:
        batches = shard(sampler(seed, state.epoch), rank, world)  # the same count on every process
        pending = 0  # micro-batches since the last optimizer step
        for i in range(state.batch_in_epoch, len(batches)):
            batch = _load(train, batches[i], pad_id, regression, batch_transform, accelerator.device)
            ctx.step, ctx.first = state.step, pending == 0
            ctx.sync = pending + 1 == cfg.grad_accum or i + 1 == len(batches)
            loss = update_step(model, batch, ctx)
            pending += 1
            state.examples += len(batches[i]) * world
            state.batch_in_epoch = i + 1
            if not ctx.sync:
                continue
            if scheduler is not None:
                scheduler.step()
            pending = 0
            state.step += 1
            bar.update(1)
            loss_value = None if loss is None else float(loss)
            if log and state.step % cfg.log_every == 0:
                log({"event": "train", "step": state.step, "epoch": state.epoch,
                     "loss": loss_value, "lr": scheduler.get_last_lr()[0] if scheduler else None})
            if loss_value is not None:
                bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            stop = state.step >= n_steps
            # With eval_every, the last step is evaluated too, so keep_best can choose the final weights.
            if evaluate is not None and cfg.eval_every and (state.step % cfg.eval_every == 0 or stop):
                stop = run_eval() or stop
                state.stopped_early = stop and state.step < n_steps
            if stop:
                break
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                save()
        else:  # epoch finished
            state.epoch += 1
            state.batch_in_epoch = 0
            if evaluate is not None and not cfg.eval_every:
                state.stopped_early = run_eval() and state.step < n_steps
            done = state.step >= n_steps or state.stopped_early
            if not done:
                save()
            continue
        if evaluate is not None and not cfg.eval_every and state.step >= n_steps:
            run_eval()  # a fractional last epoch still gets its evaluation
        done = True
    bar.close()
    train_time = time.perf_counter() - t_start - state.eval_time_s  # training only, evals excluded
    if cfg.keep_best and state.best_step is not None and state.best_step != state.step:
        _restore_best(accelerator.unwrap_model(model), best_in_memory, best_path)
    _call_hook(hooks, "on_train_end")
    return FitResult(steps=state.step, train_time_s=train_time, examples_seen=state.examples,
                     examples_per_s=state.examples / max(train_time, 1e-9), best_metric=state.best,
                     best_step=state.best_step, stopped_early=state.stopped_early, history=state.history)


def _checkpoint_codec(cfg, model: nn.Module):
    """This run's checkpoint codec (``train.checkpoint_codec``), attached to the initial weights; or None."""
    from nluforge.train.codecs import make_codec

    codec = make_codec(getattr(cfg, "checkpoint_codec", "none"), getattr(cfg, "checkpoint_codec_params", None))
    if codec is not None:
        codec.attach(ckpt.trainable_state(model))
    return codec


def _calibration_loss(model, train: Encoded, sampler: Sampler, seed: int, pad_id: int, regression: bool,
                      transform, device, loss_fn, codec) -> Callable[[], float] | None:
    """The loss a codec's sensitivity search measures: fixed training batches, eval mode, no RNG used.

    The batches are the first ``calib_batches`` of an epoch drawn with another seed, so they do not
    depend on where training stands (the loop sees no dev set; see the codec's docstring).
    """
    n = getattr(getattr(codec, "cfg", None), "calib_batches", 0)
    if not n:
        return None
    idx = [b for b in sampler(seed + 104_729, 0) if b][:n]
    batches = [_load(train, b, pad_id, regression, transform, device) for b in idx]

    def calib_loss() -> float:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            total = sum(float(loss_fn(model, batch)[0]) for batch in batches)
        model.train(was_training)
        return total / len(batches)

    return calib_loss


def _default_sampler(train: Encoded, cfg) -> LengthGroupedSampler:
    grouping = cfg.group_by_length  # True: the Trainer's group size; an integer: batches per group
    mega = TRAINER_GROUP_BATCHES if isinstance(grouping, bool) else int(grouping)
    return LengthGroupedSampler(train.lengths(), cfg.batch_size, group=bool(grouping), mega=mega)


def _check_inputs(train: Encoded, sampler: Sampler, cfg, world: int) -> None:
    if len(train) == 0:
        raise UserError("the training split has no examples; check the data and max_train_samples")
    if getattr(sampler, "allows_empty", False) and (cfg.grad_accum > 1 or world > 1):
        raise UserError(f"{type(sampler).__name__} draws variable, possibly empty batches: it needs "
                        f"train.grad_accum=1 and one process (got grad_accum={cfg.grad_accum}, {world} processes)")


def _load(train: Encoded, idx: list[int], pad_id: int, regression: bool, transform, device) -> Batch | None:
    """The collated batch on ``device``, or None for an empty batch."""
    if not idx:
        return None
    batch = collate(train, idx, pad_id, regression=regression)
    if transform is not None:
        batch = transform(batch)
    return {k: v.to(device) for k, v in batch.items()}


def _call_hook(hooks: Any, name: str, *args) -> None:
    hook = getattr(hooks, name, None) if hooks is not None else None
    if hook is not None:
        hook(*args)


def _restore_best(model: nn.Module, in_memory: dict[str, torch.Tensor] | None, path: Path | None) -> None:
    if in_memory is not None:
        own = ckpt.trainable_state(model)
        with torch.no_grad():
            for name, tensor in in_memory.items():
                own[name].copy_(tensor)
    elif path is not None and path.is_file():  # resumed after the best evaluation
        ckpt.load_weights(model, path)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled,
                dynamic_ncols=True, leave=False)
