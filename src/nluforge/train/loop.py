"""The training loop: one explicit function, built on ``accelerate``.

Seams (plain callables, no event framework): ``loss_fn(model, batch) -> (loss, logits)`` for
distillation or adversarial training, ``batch_transform(batch) -> batch``, ``evaluate(model) -> metrics``
and per-step ``hooks`` (a method's :class:`~nluforge.methods.base.TrainHooks`-like object with
``before_forward``/``after_backward``/``after_step``/``on_train_end``). The loop knows no method.

Features: dynamic padding with length-grouped batches (sorted within groups of 50 batches, then
shuffled; ``group_by_length`` sets the group size), gradient accumulation, linear warmup then linear
decay (the scheduler is built by the caller), evaluation every N steps or once per epoch,
keeping the best weights, early stopping, bf16/fp16 autocast on CUDA only (bf16 autocast is ~20x
slower on this kind of AVX2-only CPU), and exact resume from atomic checkpoints: the batch order of
an epoch is a function of ``(seed, epoch)`` and the RNG states are checkpointed, so a run killed with
``kill -9`` and resumed replays the same steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nluforge.models.inputs import TRAINER_GROUP_BATCHES, Encoded, collate, length_grouped_batches
from nluforge.train import checkpoint as ckpt

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


def default_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy for classification, MSE for regression (float labels)."""
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits  # (B, C)
    if labels.dtype.is_floating_point:
        return F.mse_loss(logits.squeeze(-1).float(), labels), logits
    return F.cross_entropy(logits.float(), labels), logits


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int, world: int = 1) -> int:
    batches = math.ceil(n_examples / batch_size) // world if world > 1 else math.ceil(n_examples / batch_size)
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
) -> FitResult:
    """Train ``model`` in place and return what happened. See the module docstring."""
    regression = bool(train.labels) and isinstance(train.labels[0], float)
    world, rank = accelerator.num_processes, accelerator.process_index
    n_steps = total_steps(cfg, len(train), world)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "examples": 0, "train_time_s": 0.0,
             "best": None, "best_step": None, "bad_evals": 0, "history": [], "stopped_early": False,
             "eval_time_s": 0.0}
    torch.manual_seed(seed)
    if resume and checkpoint_dir is not None:
        restored = ckpt.load_checkpoint(checkpoint_dir, accelerator.unwrap_model(model), optimizer, scheduler)
        state.update(restored or {})
    best_path = checkpoint_dir / ckpt.BEST if checkpoint_dir is not None else None
    best_in_memory: dict[str, torch.Tensor] | None = None
    bar = _progress_bar(n_steps, state["step"], show_progress and accelerator.is_main_process)
    model.train()
    t_start = time.perf_counter() - state["train_time_s"]

    def run_eval() -> bool:
        """Evaluate, track the best weights; return True when early stopping triggers."""
        nonlocal best_in_memory
        t_eval = time.perf_counter()
        metrics = evaluate(accelerator.unwrap_model(model))
        model.train()
        value = metrics.get(primary)
        state["history"].append({"step": state["step"], **metrics})
        improved = value is not None and (state["best"] is None or
                                          (value > state["best"] if greater_is_better else value < state["best"]))
        if improved:
            state["best"], state["best_step"], state["bad_evals"] = value, state["step"], 0
            weights = ckpt.trainable_state(accelerator.unwrap_model(model))
            best_in_memory = {k: v.detach().clone() for k, v in weights.items()}
            if best_path is not None:
                ckpt.save_weights(accelerator.unwrap_model(model), best_path)
        else:
            state["bad_evals"] += 1
        if log:
            log({"event": "eval", "step": state["step"], **metrics})
        state["eval_time_s"] += time.perf_counter() - t_eval
        patience = cfg.early_stopping_patience
        return bool(patience and state["bad_evals"] >= patience)

    def save() -> None:
        if checkpoint_dir is not None and accelerator.is_main_process:
            state["train_time_s"] = time.perf_counter() - t_start
            ckpt.save_checkpoint(checkpoint_dir, state["step"], accelerator.unwrap_model(model),
                                 optimizer, scheduler, state)

    grouping = cfg.group_by_length  # True: the Trainer's group size; an integer: batches per group
    mega = TRAINER_GROUP_BATCHES if isinstance(grouping, bool) else int(grouping)
    done = state["step"] >= n_steps or state["stopped_early"]
    while not done:
        batches = length_grouped_batches(train.lengths(), cfg.batch_size, seed=seed, epoch=state["epoch"],
                                         group=bool(grouping), mega=mega)
        if world > 1:
            usable = len(batches) // world * world
            batches = batches[rank:usable:world]
        pending = 0
        for i in range(state["batch_in_epoch"], len(batches)):
            batch = collate(train, batches[i], pad_id, regression=regression)
            if batch_transform is not None:
                batch = batch_transform(batch)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            if hooks is not None and hooks.before_forward is not None and pending == 0:
                hooks.before_forward(state["step"])
            with accelerator.autocast():
                loss, _ = loss_fn(model, batch)  # loss: () scalar

            accelerator.backward(loss / cfg.grad_accum)
            loss_value = float(loss.detach())
            pending += 1
            state["examples"] += len(batches[i]) * world
            state["batch_in_epoch"] = i + 1
            last = i + 1 == len(batches)
            if pending < cfg.grad_accum and not last:
                continue
            _optimizer_step(model, optimizer, scheduler, accelerator, cfg, hooks, state["step"])
            pending = 0
            state["step"] += 1
            bar.update(1)
            if log and state["step"] % cfg.log_every == 0:
                log({"event": "train", "step": state["step"], "epoch": state["epoch"],
                     "loss": loss_value, "lr": scheduler.get_last_lr()[0] if scheduler else None})
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            stop = state["step"] >= n_steps
            # With eval_every, the last step is evaluated too, so keep_best can choose the final weights.
            if evaluate is not None and cfg.eval_every and (state["step"] % cfg.eval_every == 0 or stop):
                stop = run_eval() or stop
                state["stopped_early"] = stop and state["step"] < n_steps
            if stop:
                break
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                save()
        else:  # epoch finished
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
            if evaluate is not None and not cfg.eval_every:
                state["stopped_early"] = run_eval() and state["step"] < n_steps
            done = state["step"] >= n_steps or state["stopped_early"]
            if not done:
                save()
            continue
        if evaluate is not None and not cfg.eval_every and state["step"] >= n_steps:
            run_eval()  # a fractional last epoch still gets its evaluation
        done = True
    bar.close()
    train_time = time.perf_counter() - t_start - state["eval_time_s"]  # training only, evals excluded
    if cfg.keep_best and state["best_step"] is not None and state["best_step"] != state["step"]:
        _restore_best(accelerator.unwrap_model(model), best_in_memory, best_path)
    if hooks is not None and hooks.on_train_end is not None:
        hooks.on_train_end()
    return FitResult(steps=state["step"], train_time_s=train_time, examples_seen=state["examples"],
                     examples_per_s=state["examples"] / max(train_time, 1e-9), best_metric=state["best"],
                     best_step=state["best_step"], stopped_early=state["stopped_early"],
                     history=state["history"])


def _optimizer_step(model, optimizer, scheduler, accelerator, cfg, hooks, step: int) -> None:
    if hooks is not None and hooks.after_backward is not None:
        hooks.after_backward(step)
    if cfg.max_grad_norm:
        params = [p for p in model.parameters() if p.requires_grad]
        accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    if hooks is not None and getattr(hooks, "after_step", None) is not None:
        hooks.after_step(step)  # e.g. AdaLoRA's update_and_allocate: needs the gradients still
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


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
