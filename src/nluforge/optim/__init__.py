"""L1: optimizer and learning-rate schedule registry.

``build_optimizer(name, model, lr=..., weight_decay=..., **params)``. AdamW follows the BERT recipe:
no weight decay on biases and LayerNorm weights, nor on the parameters the model names in
``model._nluforge_no_decay`` (:data:`NO_DECAY`; an adaptation method sets it when some of its
parameters must not decay, e.g. IA3's rescaling vectors). Every optimizer uses the same groups.

The memory-efficient optimizers register lazily (their module, and its backend, load on first use):
``adamw8bit`` (:mod:`.adamw8bit`), ``galore`` (:mod:`.galore`), ``adahessian`` (:mod:`.adahessian`),
``mezo`` (:mod:`.mezo`). Each entry's meta says what the pipeline must know before it trains:

- ``paper``; ``state_per_param``: the claimed optimizer-state bytes per trainable fp32 parameter (words,
  for ``nluforge optimizers``); each run measures the real figure (:func:`state_mb`);
- ``update_step``: ``None`` (forward, backward, ``optimizer.step()``), ``"second_order"`` (the backward
  keeps its graph: ``create_graph``) or ``"zeroth_order"`` (two forwards, no backward); the train layer
  maps it to an update step (:mod:`nluforge.train.update_steps`);
- ``attn_implementation``: how the model must be loaded (AdaHessian: ``"eager"``, SDPA on CPU has no
  double backward);
- ``not_for``: methods the combination makes no sense for, each with the reason (a one-line error in
  ``prepare``, :func:`check_combination`); options that need CUDA are checked by :func:`check_model`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nluforge.core.errors import UserError
from nluforge.core.registry import Registry

OPTIMIZERS: Registry[Any] = Registry("optimizer", hint="see `nluforge optimizers`")
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


# Methods that train themselves (a closed-form head, SetFit's own loop) never reach the optimizer.
_SELF_TRAINED = {"linear_probe": "linear_probe fits its head in closed form, without an optimizer",
                 "setfit": "setfit trains with its own contrastive loop and AdamW"}
_GRADIENT_HOOKS = "AdaLoRA's rank allocation scores the gradients and adds its penalty with its own backward"


@OPTIMIZERS.register("adamw", summary="AdamW, torch (fused where it applies)",
                     paper="Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization",
                     state_per_param="8 B (two fp32 moments)", update_step=None, not_for={})
def adamw(model: nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8,
          fused: bool | None = None):
    """``fused=None`` picks torch's fused kernel where it applies: on this 2-core CPU it steps the 22M
    parameters of MiniLM in 26 ms against 166 ms for ``foreach`` (the transformers Trainer's default
    ``adamw_torch_fused`` does the same). ``fused=false`` in ``optimizer_params`` turns it off."""
    groups = _param_groups(model, weight_decay)
    if fused is None:
        fused = _can_fuse(groups)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=bool(fused))


OPTIMIZERS.register("adamw8bit", "nluforge.optim.adamw8bit:adamw8bit",
                    summary="AdamW, 8-bit block-wise moments",
                    paper="Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization",
                    state_per_param="2 B (two uint8 moments + one fp32 absmax per 256-block); fp32 for "
                                    "tensors under 4096 elements", update_step=None, not_for=_SELF_TRAINED)
OPTIMIZERS.register("galore", "nluforge.optim.galore:galore",
                    summary="AdamW on rank-r projected gradients",
                    paper="Zhao et al. 2024, GaLore: Memory-Efficient LLM Training by Gradient Low-Rank "
                          "Projection",
                    state_per_param="8·r/min(m,n) B on projected m×n matrices (+ an r×min(m,n) "
                                    "projection); 8 B on the rest", update_step=None, not_for=_SELF_TRAINED)
OPTIMIZERS.register("adahessian", "nluforge.optim.adahessian:adahessian",
                    summary="Adam on a Hutchinson Hessian diagonal",
                    paper="Yao et al. 2021, ADAHESSIAN: An Adaptive Second Order Optimizer for Machine "
                          "Learning", state_per_param="8 B (gradient and Hessian-diagonal moments)",
                    update_step="second_order", attn_implementation="eager",
                    not_for={**_SELF_TRAINED, "adalora": _GRADIENT_HOOKS})
OPTIMIZERS.register("mezo", "nluforge.optim.mezo:mezo",
                    summary="zeroth-order SPSA, two forwards a step",
                    paper="Malladi et al. 2023, Fine-Tuning Language Models with Just Forward Passes",
                    state_per_param="0 B (a seed and a step counter)", update_step="zeroth_order",
                    not_for={**_SELF_TRAINED, "adalora": _GRADIENT_HOOKS})


def check_combination(name: str, method: str, *, grad_accum: int = 1, privacy: bool = False) -> None:
    """The one-line error for an optimizer × method (or × training setting) that makes no sense."""
    entry = OPTIMIZERS.entry(name)
    reason = entry.meta.get("not_for", {}).get(method)
    if reason:
        raise UserError(f"optimizer '{entry.name}' does not apply to method '{method}': {reason}")
    if privacy and entry.name != "adamw":
        raise UserError(f"optimizer '{entry.name}' with privacy: DP-SGD clips per-sample gradients of a plain "
                        "first-order step; use optimizer adamw")
    if entry.meta.get("update_step") == "zeroth_order" and grad_accum > 1:
        raise UserError(f"optimizer '{entry.name}' takes a whole zeroth-order step per batch and needs "
                        f"train.grad_accum=1 (got {grad_accum}); use a larger train.batch_size")


def check_model(name: str, model: nn.Module, method: str, params: dict[str, Any]) -> None:
    """Checks that need the adapted model or the device (run in ``prepare``, before any training)."""
    checker = getattr(_module_of(name), "check", None)
    if checker is not None:
        checker(model, method, **params)


def _module_of(name: str):
    import inspect

    return inspect.getmodule(OPTIMIZERS.get(name))


def build_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float, **params: Any):
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("the model has no trainable parameters; check the method and its options")
    factory = OPTIMIZERS.get(name)
    try:
        return factory(model, lr=lr, weight_decay=weight_decay, **params)
    except TypeError as err:
        raise UserError(f"bad optimizer_params for '{name}': {err}") from None


def state_mb(optimizer) -> float:
    """MB held by the optimizer's state, counted from its tensors (each storage once).

    Walks ``optimizer.state`` through dicts, lists and plain objects (GaLore's projectors), and through
    tensor subclasses that flatten into inner tensors (torchao's 8-bit state).
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    seen: set[tuple[int, int]] = set()
    total = 0

    def walk(node: Any) -> None:
        nonlocal total
        if torch.is_tensor(node):
            flatten = getattr(node, "__tensor_flatten__", None)
            if flatten is not None and type(node) is not torch.Tensor and not isinstance(node, nn.Parameter):
                for attr in flatten()[0]:
                    walk(getattr(node, attr))
                return
            key = (node.untyped_storage().data_ptr(), node.untyped_storage().nbytes())
            if key not in seen:
                seen.add(key)
                total += node.untyped_storage().nbytes()
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)
        elif hasattr(node, "__dict__") and not isinstance(node, type):
            walk(vars(node))

    walk(list(inner.state.values()))
    return total / 2**20


def optimizer_info(optimizer) -> dict[str, Any]:
    """What a factory recorded about the optimizer it built (e.g. which 8-bit backend ran)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return dict(getattr(inner, "nluforge_info", {}))


def linear_schedule(optimizer, *, total_steps: int, warmup_ratio: float):
    """Linear warmup over ``warmup_ratio`` of the steps, then linear decay to zero."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(round(warmup_ratio * total_steps)), total_steps)
