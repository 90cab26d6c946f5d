"""L1: optimizer and learning-rate schedule registry.

``build_optimizer(name, model, lr=..., weight_decay=..., **params)``. AdamW follows the BERT recipe:
no weight decay on biases and LayerNorm weights, nor on the parameters the model names in
``model._nluforge_no_decay`` (:data:`NO_DECAY`; an adaptation method sets it when some of its
parameters must not decay, e.g. IA3's rescaling vectors). More optimizers (8-bit AdamW, GaLore,
AdaHessian, MeZO) register here lazily.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.core.registry import Registry

OPTIMIZERS: Registry[Any] = Registry("optimizer", hint="known: adamw")
NO_DECAY = "_nluforge_no_decay"  # model attribute: names (as in named_parameters) that get no weight decay


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    declared = set(getattr(model, NO_DECAY, ()))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "norm" in name.lower() or name in declared
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _can_fuse(groups: list[dict[str, Any]]) -> bool:
    """torch's fused AdamW kernel takes dense float tensors on CPU or CUDA."""
    params = [p for g in groups for p in g["params"]]
    return all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES and not p.is_sparse
               for p in params)


@OPTIMIZERS.register("adamw", summary="AdamW (Loshchilov & Hutter 2019), torch implementation")
def adamw(model: nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8,
          fused: bool | None = None):
    """``fused=None`` picks torch's fused kernel where it applies: on this 2-core CPU it steps the 22M
    parameters of MiniLM in 26 ms against 166 ms for ``foreach`` (the transformers Trainer's default
    ``adamw_torch_fused`` does the same). ``fused=false`` in ``optimizer_params`` turns it off."""
    groups = _param_groups(model, weight_decay)
    if fused is None:
        fused = _can_fuse(groups)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=bool(fused))


def build_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float, **params: Any):
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("the model has no trainable parameters; check the method and its options")
    factory = OPTIMIZERS.get(name)
    try:
        return factory(model, lr=lr, weight_decay=weight_decay, **params)
    except TypeError as err:
        raise UserError(f"bad optimizer_params for '{name}': {err}") from None


def linear_schedule(optimizer, *, total_steps: int, warmup_ratio: float):
    """Linear warmup over ``warmup_ratio`` of the steps, then linear decay to zero."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(round(warmup_ratio * total_steps)), total_steps)
