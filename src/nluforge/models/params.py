"""Parameter bookkeeping shared by methods, the training loop and checkpoints."""

from __future__ import annotations

import torch
from torch import nn


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Parameter count, each shared tensor counted once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
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
