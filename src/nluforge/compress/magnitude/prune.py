"""Unstructured magnitude pruning of a trained encoder, stored sparse.

Papers: Han, Pool, Tran & Dally 2015, "Learning both Weights and Connections for Efficient Neural
Networks" (NeurIPS, arXiv:1506.02626): remove the connections whose weights have the smallest
magnitude; Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for model
compression" (arXiv:1710.01878): a target sparsity reached by magnitude, per layer or over the model;
Gordon, Duh & Andrews 2020 (arXiv:2002.08307) apply it to BERT.

Departures from the papers:
- One shot, after training: no gradual schedule (Zhu & Gupta raise the sparsity over training steps) and
  no retraining of the surviving weights (Han et al. retrain and iterate). Expect accuracy to fall from
  moderate sparsities on; fine-tuning after pruning is left to a later run.
- Exact counts: exactly ``round(sparsity * n)`` weights are zeroed (the smallest ``|w|``, ties broken by
  position), over all targeted weights (``scope: global``) or per tensor (``scope: layer``), instead of
  ``torch.nn.utils.prune``'s masks and hooks, which we would make permanent straight away.
- Only weight matrices are pruned (nn.Linear, and nn.Embedding when asked); biases and layer norms stay.
- A peft model is merged first (as in ``int8_dynamic``).

Storage (``nluforge.compress.sparse``): no pickle. ``model.safetensors`` holds, for each pruned weight
``name``, ``name.mask`` (uint8, the nonzero pattern bit-packed row-major with ``numpy.packbits``, 1 bit a
weight) and ``name.values`` (fp32, the nonzero weights in row-major order); every other tensor as is. The manifest's layout gives
each pruned weight's shape and the achieved sparsity. The served model is dense again (CPU kernels for
unstructured sparsity do not make BERT faster): the saving is on disk, not in latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nluforge.compress.magnitude.config import MagnitudeConfig
from nluforge.compress.sparse import load_sparse, save_sparse
from nluforge.compress.targets import servable_form, weight_targets
from nluforge.core.errors import UserError


def _zero_smallest(weights: list[torch.Tensor], sparsity: float) -> None:
    """Zero exactly ``round(sparsity * n)`` of the ``n`` entries of ``weights`` taken together."""
    flat = torch.cat([w.detach().abs().flatten() for w in weights])  # (n,)
    k = round(sparsity * flat.numel())
    if k == 0:
        return
    drop = torch.zeros(flat.numel(), dtype=torch.bool)
    drop[torch.argsort(flat, stable=True)[:k]] = True
    start = 0
    with torch.no_grad():
        for w in weights:
            w.masked_fill_(drop[start:start + w.numel()].view(w.shape), 0.0)
            start += w.numel()


def compress(model: nn.Module, cfg: MagnitudeConfig) -> nn.Module:
    """Prune ``model`` in place: its targeted weights reach ``cfg.sparsity`` zeros."""
    model = servable_form(model).to("cpu").eval()
    targets = weight_targets(model, embeddings=cfg.embeddings, skip=cfg.skip)
    if not targets:
        raise UserError("magnitude found no nn.Linear (or nn.Embedding) weight to prune (check 'skip')")
    if cfg.scope == "global":
        _zero_smallest(list(targets.values()), cfg.sparsity)
    else:
        for weight in targets.values():
            _zero_smallest([weight], cfg.sparsity)
    return model


def save(model: nn.Module, cfg: MagnitudeConfig, folder: Path) -> dict[str, Any]:
    """Write ``model.safetensors`` (pruned weights as bitmask + values); return the layout."""
    targets = weight_targets(model, embeddings=cfg.embeddings, skip=cfg.skip)
    return save_sparse(model, targets, folder, "nluforge-magnitude")


def load(folder: Path, model: nn.Module, cfg: MagnitudeConfig, layout: dict[str, Any]) -> nn.Module:
    """Rebuild the pruned model on ``model`` (the unpruned structure) from ``folder``."""
    return load_sparse(folder, servable_form(model).to("cpu").eval(), layout)
