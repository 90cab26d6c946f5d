"""Parameter bookkeeping shared by methods, the training loop and checkpoints."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameter count, each shared tensor counted once.

    peft's ``modules_to_save`` keeps a frozen copy of the head (``original_module``) next to the trained
    one; the copy is never used in the forward pass, so it is not counted.
    """
    seen: set[int] = set()
    total = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen or (trainable_only and not p.requires_grad) or ".original_module." in name:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a method trains: trainable parameters, plus buffers it names in
    ``model._nluforge_extra_state`` (state that is learned or sampled but is not a parameter)."""
    state = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name in getattr(model, "_nluforge_extra_state", ()):
        state[name] = model.get_buffer(name)
    return state
