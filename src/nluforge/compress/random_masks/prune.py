"""Random unstructured pruning: the best of several random masks at a target sparsity.

Papers: Liu, Chen, Chen, Atashgahi, Yin, Kou, Shen, Pechenizkiy, Wang & Mocanu 2022, "The Unreasonable
Effectiveness of Random Pruning: Return of the Most Naive Baseline for Sparse Training" (ICLR,
arXiv:2202.02643): random masks with fixed per-layer sparsities, the baseline that magnitude criteria
must beat; Gale, Elsen & Hooker 2019, "The State of Sparsity in Deep Neural Networks"
(arXiv:1902.09574) compare magnitude pruning against it.

Departures from the papers:
- After training, not before: the papers train the sparse network from scratch (or fine-tune it); here
  a trained model is masked once and nothing is retrained, so it is a baseline for ``magnitude`` (also
  one shot), not a way to train sparse models.
- Uniform per-layer sparsity (each targeted tensor loses the same fraction), not Liu et al.'s ERK ratios.
- Best of N: ``candidates`` masks are drawn and each is scored by the mean task loss on calibration
  examples, with no training ("a short early evaluation"); the lowest loss is kept. This selection is
  ours, not the papers': it guards a one-shot random mask against an unlucky draw.
- A peft model is merged first (as in ``int8_dynamic``). Storage as ``magnitude``
  (``nluforge.compress.sparse``: bitmask + values); the layout adds every candidate's loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nluforge.compress.calibration import mean_loss
from nluforge.compress.random_masks.config import RandomMasksConfig
from nluforge.compress.sparse import load_sparse, save_sparse
from nluforge.compress.targets import servable_form, weight_targets
from nluforge.core.errors import UserError

SCORES = "_nluforge_random_masks"  # model attribute: the candidates' losses and the one kept, for the layout


def random_masks(targets: dict[str, nn.Parameter], sparsity: float, seed: int) -> dict[str, torch.Tensor]:
    """Per tensor, a bool mask (its shape) dropping exactly ``round(sparsity * numel)`` entries at random."""
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name, w in targets.items():
        drop = torch.zeros(w.numel(), dtype=torch.bool)
        drop[torch.randperm(w.numel(), generator=g)[: round(sparsity * w.numel())]] = True
        masks[name] = drop.view(w.shape)
    return masks


def compress(model: nn.Module, cfg: RandomMasksConfig, calibration=None) -> nn.Module:
    """Draw ``cfg.candidates`` masks, score each on ``calibration`` (labelled batches), apply the best."""
    model = servable_form(model).to("cpu").eval()
    targets = weight_targets(model, embeddings=cfg.embeddings, skip=cfg.skip)
    if not targets:
        raise UserError("random_masks found no nn.Linear (or nn.Embedding) weight to prune (check 'skip')")
    original = {name: w.detach().clone() for name, w in targets.items()}
    losses = []
    with torch.no_grad():
        for i in range(cfg.candidates):
            for name, drop in random_masks(targets, cfg.sparsity, cfg.seed + i).items():
                targets[name].copy_(original[name].masked_fill(drop, 0.0))
            losses.append(mean_loss(model, calibration))
        best = min(range(cfg.candidates), key=losses.__getitem__)
        for name, drop in random_masks(targets, cfg.sparsity, cfg.seed + best).items():
            targets[name].copy_(original[name].masked_fill(drop, 0.0))
    setattr(model, SCORES, {"candidate_losses": [round(v, 6) for v in losses], "kept": best})
    return model


def save(model: nn.Module, cfg: RandomMasksConfig, folder: Path) -> dict[str, Any]:
    """Write ``model.safetensors`` (pruned weights as bitmask + values); the layout adds the candidates' losses."""
    layout = save_sparse(model, weight_targets(model, embeddings=cfg.embeddings, skip=cfg.skip), folder,
                         "nluforge-random_masks")
    return {**layout, **getattr(model, SCORES, {})}


def load(folder: Path, model: nn.Module, cfg: RandomMasksConfig, layout: dict[str, Any]) -> nn.Module:
    """Rebuild the pruned model on ``model`` (the unpruned structure) from ``folder``."""
    return load_sparse(folder, servable_form(model).to("cpu").eval(), layout)
