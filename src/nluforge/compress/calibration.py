"""Calibration batches: the labelled examples that compressors which score the model read.

A batch is what ``nluforge.models.inputs.collate`` returns (``input_ids``, ``attention_mask``, ``labels``,
maybe ``token_type_ids``); derived runs take them from the parent's train split. The loss here is read
from the model's ``logits`` (B, C), so a method's own head (PET's verbalizer, ...) scores like any other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def task_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Cross-entropy, or MSE for a one-output (regression) head."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.float(), reduction=reduction)
    return F.cross_entropy(logits, labels, reduction=reduction)


def forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits (B, C) for a calibration batch (its labels stay out of the call)."""
    return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


@torch.no_grad()
def mean_loss(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """The task loss averaged over every example of ``batches``."""
    total = sum(float(task_loss(forward(model, b), b["labels"])) for b in batches)
    return total / sum(len(b["labels"]) for b in batches)
