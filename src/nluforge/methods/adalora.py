"""AdaLoRA: LoRA in SVD form, W x + (alpha / r) · P Λ Q x, with the rank budget moved where it matters.

Paper: Zhang et al. 2023, "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning" (ICLR).
Each adapted Linear (in -> out) gets Q (r, in), Λ (r, 1) and P (out, r), r = ``init_r``. During training
the importance of each singular triplet (sensitivity smoothed by ``beta1``, times its uncertainty,
``beta2``) decides which Λ entries are zeroed, while the total budget falls on a cubic
schedule from ``init_r`` to ``target_r`` per layer on average: full budget for the first
``tinit_ratio`` of the steps, fixed target budget for the last ``tfinal_ratio``, re-allocation every
``delta_t`` steps. An orthogonality penalty gamma · (||PᵀP − I||_F + ||QQᵀ − I||_F) keeps P and Q
near-orthogonal.

Implementation: peft's ``AdaLoraConfig``/``update_and_allocate``. The training loop calls
:func:`adapt` before it knows how long the run is, so the schedule (peft's ``total_step``, ``tinit``,
``tfinal``, in steps) is set by :func:`train_hooks` from ``total_steps``; the schedule is given here as
fractions of the run so one config fits any run length.

Departures: the paper gives t_i, t_f and ΔT in steps (for its multi-epoch GLUE runs); here they are
fractions of the run (``delta_t`` stays in steps). The orthogonal penalty is added to the gradients in
the ``after_backward`` hook (peft adds it to ``outputs.loss`` only when labels go through the model's
forward, which our loop's loss does not do). Defaults adapt query and value like ``lora`` (the paper
adapts all six matrices per layer: pass ``target_modules``). Called without hooks (plain Python),
AdaLoRA trains as a fixed-rank SVD-form LoRA without the budget schedule or the penalty. P and Q
start at N(0, 0.02) and Λ at zero, so the update grows from three small factors: short runs need a
much larger lr than LoRA (on the default model, 47 steps: 3e-2 learns SST-2, 1e-2 barely moves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.methods import peft_common as pc
from nluforge.methods.base import TrainHooks, head_param_count
from nluforge.models.arch import arch_of


@dataclass
class Config:
    method: ClassVar[str] = "adalora"
    init_r: int = 12  # starting rank of every update (paper: 1.5x the target)
    target_r: int = 8  # average rank left when the budget schedule ends
    alpha: float = 16.0  # update scale is alpha / init_r
    dropout: float = 0.1  # dropout on the adapter branch input, in [0, 1)
    target_modules: list[str] | None = None  # Linear layers (peft's suffix rule); None: query, value
    tinit_ratio: float = 0.1  # fraction of steps at the full budget before pruning starts (t_i)
    tfinal_ratio: float = 0.3  # fraction of final steps at the fixed target budget (t_f)
    delta_t: int = 1  # steps between budget re-allocations (ΔT)
    beta1: float = 0.85  # smoothing of the sensitivity
    beta2: float = 0.85  # smoothing of the uncertainty
    orth_reg_weight: float = 0.1  # gamma of the orthogonality penalty (paper: 0.1)

    def __post_init__(self):
        pc.check_positive(self.method, init_r=self.init_r, target_r=self.target_r, alpha=self.alpha,
                          delta_t=self.delta_t)
        pc.check_dropout(self.method, self.dropout)
        if self.target_r > self.init_r:
            raise UserError(f"method_params (adalora).target_r={self.target_r} must be <= init_r={self.init_r}")
        ratios = (self.tinit_ratio, self.tfinal_ratio)
        if min(ratios) < 0 or sum(ratios) >= 1:
            raise UserError("method_params (adalora): tinit_ratio and tfinal_ratio must be >= 0 with a sum < 1, "
                            f"got {self.tinit_ratio} and {self.tfinal_ratio}")
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1) or self.orth_reg_weight < 0:
            raise UserError("method_params (adalora): beta1 and beta2 must be in (0, 1), orth_reg_weight >= 0")


def targets(model: nn.Module, cfg: Config) -> dict[str, nn.Linear]:
    layers = pc.resolve_targets(model, cfg.target_modules or arch_of(model).lora_targets, cfg.method)
    pc.check_rank(layers, cfg.init_r, cfg.method, field="init_r")
    return layers


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    from peft import AdaLoraConfig

    peft_config = AdaLoraConfig(
        task_type="SEQ_CLS", init_r=cfg.init_r, target_r=cfg.target_r, lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout, target_modules=list(targets(model, cfg)),
        deltaT=cfg.delta_t, beta1=cfg.beta1, beta2=cfg.beta2,
        orth_reg_weight=0.0,  # applied by train_hooks, whatever the loss function
        total_step=1, tinit=0, tfinal=0,  # placeholders: train_hooks sets the schedule from the run length
    )
    return pc.wrap(model, peft_config)


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """Per adapted Linear (in -> out): Q (r, in) + Λ (r, 1) + P (out, r) = r·(in + out + 1); plus the head.

    This is the count while training: the schedule zeroes Λ entries but keeps their tensors, and only
    the saved adapter is cut to each layer's final rank.
    """
    svd = sum(cfg.init_r * (m.in_features + m.out_features + 1) for m in targets(model, cfg).values())
    return svd + head_param_count(model)


def train_hooks(model: nn.Module, cfg: Config, total_steps: int) -> TrainHooks:
    """Set the budget schedule for a run of ``total_steps`` optimizer steps and return the step hooks.

    ``after_backward`` adds the orthogonality penalty's gradient; ``after_step`` must run after
    ``optimizer.step()`` and before ``zero_grad()`` (it reads the gradients to score importance).
    ``state_dict``/``load_state_dict`` carry the allocator's smoothed scores and the rank pattern
    through a checkpoint, so a resumed run allocates the budget as an uninterrupted one would.
    """
    tuner = _tuner(model)
    _set_schedule(tuner, cfg, total_steps)
    adapter = tuner.trainable_adapter_name

    def add_orth_penalty(step: int) -> None:
        (cfg.orth_reg_weight * orth_penalty(tuner, adapter)).backward()

    return TrainHooks(after_backward=add_orth_penalty if cfg.orth_reg_weight > 0 else None,
                      after_step=tuner.update_and_allocate,
                      state_dict=lambda: allocator_state(tuner),
                      load_state_dict=lambda state: load_allocator_state(tuner, state))


_SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")  # peft RankAllocator: |w·g|, its EMA, the EMA of its deviation


def allocator_state(tuner) -> dict:
    """peft's RankAllocator state (scores per parameter name), the rank pattern, and the schedule in steps."""
    alloc, peft_config = tuner.rankallocator, tuner.peft_config[tuner.trainable_adapter_name]
    return {**{k: dict(getattr(alloc, k)) for k in _SCORES},
            "rank_pattern": peft_config.rank_pattern,
            "schedule": [peft_config.total_step, peft_config.tinit, peft_config.tfinal]}


def load_allocator_state(tuner, state: dict) -> None:
    alloc, peft_config = tuner.rankallocator, tuner.peft_config[tuner.trainable_adapter_name]
    schedule = [peft_config.total_step, peft_config.tinit, peft_config.tfinal]
    if state["schedule"] != schedule:
        raise UserError(f"adalora: the checkpoint's budget schedule (total, tinit, tfinal) {state['schedule']} "
                        f"differs from this run's {schedule}; resume with the same steps, or rerun without --resume")
    params = dict(tuner.model.named_parameters())
    for key in _SCORES:
        setattr(alloc, key, {n: t.to(params[n].device) for n, t in state[key].items()})
    peft_config.rank_pattern = state["rank_pattern"]


def _tuner(model: nn.Module):
    tuner = getattr(model, "base_model", None)
    if not hasattr(tuner, "update_and_allocate"):
        raise UserError(f"adalora.train_hooks needs the model returned by adalora.adapt, got {type(model).__name__}")
    return tuner


def _set_schedule(tuner, cfg: Config, total_steps: int) -> None:
    """peft's schedule in steps; floors keep tinit + tfinal < total_steps, as peft requires."""
    if total_steps < 1:
        raise UserError(f"adalora needs at least one training step, got total_steps={total_steps}")
    peft_config = tuner.peft_config[tuner.trainable_adapter_name]
    peft_config.tinit = int(cfg.tinit_ratio * total_steps)
    peft_config.tfinal = int(cfg.tfinal_ratio * total_steps)
    tuner.rankallocator.set_total_step(total_steps)  # the allocator shares peft_config


def orth_penalty(tuner: nn.Module, adapter: str) -> torch.Tensor:
    """Mean over adapted layers of ||Q Qᵀ − I||_F and ||Pᵀ P − I||_F (peft's form of the paper's regulariser)."""
    terms = []
    for name, p in tuner.named_parameters():
        if f"lora_A.{adapter}" in name:
            gram = p @ p.T  # Q: (r, in) -> (r, r)
        elif f"lora_B.{adapter}" in name:
            gram = p.T @ p  # P: (out, r) -> (r, r)
        else:
            continue
        eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
        terms.append(torch.linalg.matrix_norm(gram - eye, ord="fro"))
    return torch.stack(terms).mean()
