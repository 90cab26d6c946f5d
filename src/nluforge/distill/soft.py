"""Soft labels of a teacher over a whole encoded set (PET's distillation and the unlabeled texts of
``distill``): one length-sorted pass, ``softmax(logits / T)`` per example, in the set's order.

Written here, not with :func:`nluforge.eval.predict.predict`, because this package sits beside ``eval``
in the layers and may not import it; it is the same few lines (collate, forward, put back in order).
"""

from __future__ import annotations

import torch
from torch import nn

from nluforge.distill.losses import soft_labels


@torch.no_grad()
def teacher_logits(teacher: nn.Module, enc, *, batch_size: int, pad_id: int, regression: bool = False) -> torch.Tensor:
    """The teacher's logits on every example of ``enc`` (an :class:`~nluforge.models.inputs.Encoded`), (N, L)."""
    from nluforge.models.inputs import collate, eval_batches

    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    out: torch.Tensor | None = None
    for idx in eval_batches(enc.lengths(), batch_size):
        batch = collate(enc, idx, pad_id, regression=regression)
        batch.pop("labels")
        logits = teacher(**{k: v.to(device) for k, v in batch.items()}).logits.float()  # (b, L)
        if out is None:
            out = torch.empty((len(enc), logits.shape[-1]), dtype=torch.float32, device=device)
        out[torch.tensor(idx, device=device)] = logits
    teacher.train(was_training)
    return out if out is not None else torch.empty((0, 0))


def teacher_soft_labels(teacher: nn.Module, enc, temperature: float, *, batch_size: int, pad_id: int) -> torch.Tensor:
    """``softmax(teacher logits / T)`` on every example of ``enc``, (N, L), on the teacher's device."""
    return soft_labels(teacher_logits(teacher, enc, batch_size=batch_size, pad_id=pad_id), temperature)
