"""DP fine-tuning wired through the training stage's seams (the loop knows nothing of privacy).

``dp_sgd`` (``nluforge.privacy``) becomes: a :class:`~nluforge.train.samplers.PoissonSampler` with the
logical batch size as its expected batch (the subsampling the accountant assumes), an
``update_step`` that splits the Poisson batch into physical chunks (virtual batches: memory bounded
by ``physical_batch_size``), accumulates clipped per-example gradients and takes one noised optimizer
step (a noise-only step for an empty batch), and the noise multiplier calibrated so that the whole
run spends exactly the target epsilon (Opacus's ``get_noise_multiplier``). The epsilon actually spent
is recomputed from the steps taken and recorded in ``result.meta["privacy"]`` and
``result.metrics["privacy"]["train"]``.

DP defaults (Li et al. 2022: large batches, more epochs, higher learning rate) apply where the user
set neither the privacy option nor the train section's value; which ones applied is recorded.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nluforge.core.errors import UserError
from nluforge.privacy.config import (
    DP_DEFAULT_BATCH,
    DP_DEFAULT_EPOCHS,
    DP_DEFAULT_LR,
    DP_DEFAULT_STEPS,
    DpSgdConfig,
)

PRIVATE_METHODS = tuple(DP_DEFAULT_LR)  # full, bitfit, lora: plain parameters Opacus has per-sample rules for
NOT_PRIVATE_OPTIMIZERS = {
    "mezo": "it estimates gradients from forward passes only, so there is no per-example gradient to clip",
    "adahessian": "its Hessian-vector products use the unclipped loss of the whole batch",
}


def check_private(cfg, dp: DpSgdConfig, n_train: int | None = None) -> None:
    """One-line errors for a run that cannot be made private (method, optimizer, delta, grad_accum)."""
    if cfg.method not in PRIVATE_METHODS:
        raise UserError(f"DP training supports methods {', '.join(PRIVATE_METHODS)}, not '{cfg.method}' "
                        "(its trainable modules have no per-sample gradient rule in this integration); "
                        "use --method full, bitfit or lora")
    if cfg.optimizer in NOT_PRIVATE_OPTIMIZERS:
        raise UserError(f"optimizer '{cfg.optimizer}' cannot be made private: {NOT_PRIVATE_OPTIMIZERS[cfg.optimizer]}; "
                        "use adamw")
    if cfg.train.grad_accum != 1:
        raise UserError("DP training takes its logical batch from privacy batch_size (virtual batches "
                        "inside the step); set train.grad_accum to 1")
    if n_train is not None and dp.delta is not None and dp.delta >= 1 / n_train:
        raise UserError(f"privacy delta {dp.delta:g} must be < 1/n = {1 / n_train:.3g} for {n_train} training "
                        "examples (delta >= 1/n allows leaking an example outright); e.g. --dp-delta 1e-5")


@dataclasses.dataclass(frozen=True)
class DpPlan:
    batch_size: int
    epochs: float
    lr: float
    delta: float
    sample_rate: float
    steps: int
    noise_multiplier: float
    defaults_applied: dict[str, Any]


def plan(cfg, dp: DpSgdConfig, n: int, method_lr: float | None) -> DpPlan:
    """The DP run's batch, epochs, lr, delta and the calibrated noise multiplier."""
    from nluforge.experiments.config import TrainConfig
    from nluforge.privacy.accounting import noise_multiplier
    from nluforge.train.loop import steps_per_epoch, total_steps

    base, applied = TrainConfig(), {}

    def pick(name: str, own, default):
        if own is not None:
            return own
        if getattr(cfg.train, name) != getattr(base, name):  # the user set it in the train section
            return getattr(cfg.train, name)
        applied[name] = default
        return default

    batch = pick("batch_size", dp.batch_size, max(1, min(DP_DEFAULT_BATCH, n // 10)))
    per_epoch = steps_per_epoch(n, batch, 1)
    epochs = pick("epochs", dp.epochs, max(DP_DEFAULT_EPOCHS, DP_DEFAULT_STEPS / per_epoch))
    lr = dp.lr or cfg.train.lr
    if lr is None:
        lr = applied["lr"] = DP_DEFAULT_LR.get(cfg.method, method_lr)
    delta = dp.delta if dp.delta is not None else 1.0 / (10 * n)
    if dp.delta is None:
        applied["delta"] = delta
    if batch > n:
        raise UserError(f"privacy batch_size {batch} is larger than the {n} training examples")
    train_cfg = dataclasses.replace(cfg.train, batch_size=batch, epochs=epochs, grad_accum=1)
    steps = total_steps(train_cfg, n)
    q = batch / n
    sigma = noise_multiplier(dp.epsilon, delta, q, steps, dp.accountant)
    return DpPlan(batch, epochs, lr, delta, q, steps, sigma, applied)


def physical_chunks(batch: dict, physical: int):
    """A logical batch as chunks of ``physical`` examples, longest first, each cut to its longest example.

    The logical (Poisson) batch is padded to its longest sentence; chunking it as it comes would pad
    every chunk to that width (on SST-2 about 2.5x the tokens of plain batches of the same size). The
    clipped sum is a sum over examples, so the order and the chunking change nothing but the work.
    """
    import torch

    mask = batch.get("attention_mask")  # (B, T)
    n = batch["input_ids"].shape[0]
    order = torch.argsort(mask.sum(1), descending=True, stable=True) if mask is not None else torch.arange(n)
    for start in range(0, n, physical):
        idx = order[start:start + physical]
        chunk = {k: v[idx] for k, v in batch.items()}
        if mask is not None:
            width = int(chunk["attention_mask"].any(0).nonzero().max()) + 1
            # contiguous: Opacus's embedding norm rule views input_ids flat (ghost clipping)
            chunk = {k: v[:, :width].contiguous() if v.dim() == 2 and v.shape[1] == mask.shape[1] else v
                     for k, v in chunk.items()}
        yield chunk


def make_update_step(engine, physical: int):
    """The ``update_step`` seam: virtual batches of ``physical`` examples, one noised step per logical batch."""

    def update_step(model, batch, ctx):
        loss = None
        if batch is not None:
            n = batch["input_ids"].shape[0]
            losses = [engine.accumulate(chunk) * chunk["input_ids"].shape[0] for chunk in physical_chunks(batch, physical)]
            loss = sum(losses) / n
        engine.release(ctx.step)  # empty batch: the noise alone, as the accountant assumes
        ctx.optimizer.step()
        ctx.optimizer.zero_grad(set_to_none=True)
        return loss

    return update_step


def dp_train_stage(state):
    """Train the run's model with DP-SGD; returns ``Trained`` and records the privacy spent."""
    from nluforge.experiments.stages import learning_rate, train_stage
    from nluforge.models.arch import arch_of
    from nluforge.privacy.accounting import epsilon_spent
    from nluforge.privacy.engine import PrivateGradients, clip_groups, thresholds
    from nluforge.train.samplers import PoissonSampler

    prep, dp = state.prep, state.prep.sections.privacy.config
    n = len(state.encoded["train"])
    check_private(prep.cfg, dp, n)
    p = plan(prep.cfg, dp, n, learning_rate(prep))
    model = prep.model
    block_path = arch_of(model).layers if dp.groups == "blocks" else None  # e.g. encoder.layer
    groups = clip_groups(model, dp.clipping, dp.groups, block_path)
    limits = thresholds(groups, dp.max_grad_norm, dp.group_max_grad_norm)
    model.train()
    engine = PrivateGradients(model, groups, limits, noise_multiplier=p.noise_multiplier,
                              expected_batch_size=p.batch_size, mode=dp.grad_sample_mode, seed=prep.cfg.seed)
    train_cfg = dataclasses.replace(prep.cfg.train, batch_size=p.batch_size, epochs=p.epochs, grad_accum=1,
                                    max_grad_norm=None)
    try:
        trained = train_stage(state, train_cfg=train_cfg, lr=p.lr, sampler=PoissonSampler(n, p.batch_size),
                              update_step=make_update_step(engine, dp.physical_batch_size))
    finally:
        engine.close()
    spent = epsilon_spent(p.noise_multiplier, p.sample_rate, trained.fit.steps, p.delta, dp.accountant)
    state.meta["privacy"] = {
        "method": "dp_sgd", "target_epsilon": dp.epsilon, "epsilon_spent": round(spent, 4), "delta": p.delta,
        "noise_multiplier": p.noise_multiplier, "sample_rate": p.sample_rate, "steps": trained.fit.steps,
        "planned_steps": p.steps, "accountant": dp.accountant, "grad_sample_mode": dp.grad_sample_mode,
        "clipping": dp.clipping, "groups": len(groups), "thresholds": [round(c, 6) for c in limits],
        "batch_size": p.batch_size, "physical_batch_size": dp.physical_batch_size, "epochs": p.epochs,
        "lr": p.lr, "defaults_applied": p.defaults_applied}
    state.metrics["privacy"] = {"train": {"epsilon": round(spent, 4), "delta": p.delta}}
    return trained, p
