"""Batched inference over an encoded split, in length order, returned in the split's order."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nluforge.models.inputs import Encoded, collate, eval_batches


def model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The forward kwargs of a batch (everything but labels), on ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "labels"}


@torch.inference_mode()
def predict(model: nn.Module, enc: Encoded, *, batch_size: int, pad_id: int, regression: bool,
            device: torch.device | None = None, autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    """Logits of shape (N, C) (regression: (N,)) in the order of ``enc``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.zeros((len(enc), 1 if regression else 0), dtype=np.float32)
    chunks: list[tuple[list[int], np.ndarray]] = []
    for idx in eval_batches(enc.lengths(), batch_size):
        batch = collate(enc, idx, pad_id, regression=regression)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(**model_inputs(batch, device)).logits  # (B, C)
        chunks.append((idx, logits.float().cpu().numpy()))
    model.train(was_training)
    width = chunks[0][1].shape[1] if chunks else 1
    out = np.zeros((len(enc), width), dtype=np.float32)
    for idx, logits in chunks:
        out[idx] = logits
    return out[:, 0] if regression else out


def to_predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
    """Class ids (argmax) or regression scores."""
    return logits if regression else logits.argmax(axis=-1)
