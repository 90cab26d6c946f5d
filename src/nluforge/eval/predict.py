"""Batched inference over an encoded split, in length order, returned in the split's order.

Sorting by length before batching means each batch pads to nearly its own length: on SST-2
sentences (2 to 60 tokens) a batch of 64 in file order pads to its longest member, several times
the mean. :func:`predict_texts` is the path of ``nluforge predict`` and ``nluforge eval --eval-file``:
tokenize, predict in length-sorted batches, return logits in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from nluforge.models.inputs import Encoded, collate, encode, eval_batches


def model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The forward kwargs of a batch (everything but labels), on ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "labels"}


@torch.inference_mode()
def predict(model: nn.Module, enc: Encoded, *, batch_size: int, pad_id: int, regression: bool,
            device: torch.device | None = None, autocast_dtype: torch.dtype | None = None,
            on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Logits of shape (N, C) (regression: (N,)) in the order of ``enc``.

    ``on_batch(n)`` is called after each batch with its size (a progress bar's ``update``).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks: list[tuple[list[int], np.ndarray]] = []
    for idx in eval_batches(enc.lengths(), batch_size):
        batch = collate(enc, idx, pad_id, regression=regression)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(**model_inputs(batch, device)).logits  # (B, C)
        chunks.append((idx, logits.float().cpu().numpy()))
        if on_batch is not None:
            on_batch(len(idx))
    model.train(was_training)
    width = chunks[0][1].shape[1] if chunks else 1
    out = np.zeros((len(enc), width), dtype=np.float32)  # (N, C)
    for idx, logits in chunks:
        out[idx] = logits
    return out[:, 0] if regression else out


def to_predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
    """Class ids (argmax) or regression scores."""
    return logits if regression else logits.argmax(axis=-1)


def predict_texts(model: nn.Module, tokenizer, texts: Sequence[tuple[str, ...]], *, max_length: int,
                  batch_size: int, regression: bool, progress: bool = False) -> np.ndarray:
    """Tokenize ``texts`` (one or two fields each), predict in length-sorted batches, and return the
    logits (N, C) (regression: (N,)) in the order of ``texts``. ``progress`` shows a tqdm bar on
    stderr (hidden when stderr is not a terminal)."""
    enc = encode(texts, [0.0 if regression else 0] * len(texts), tokenizer, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if not progress:
        return predict(model, enc, batch_size=batch_size, pad_id=pad, regression=regression)
    from tqdm.auto import tqdm

    with tqdm(total=len(enc), desc="predict", unit="row", disable=None, dynamic_ncols=True) as bar:
        return predict(model, enc, batch_size=batch_size, pad_id=pad, regression=regression,
                       on_batch=bar.update)
