"""GaLore: Zhao, Zhang, Chen, Wang, Anandkumar & Tian 2024, "GaLore: Memory-Efficient LLM Training by
Gradient Low-Rank Projection" (ICML 2024).

For a weight matrix W (m × n) the gradient G is projected onto its top-r singular subspace on the
shorter side, R = Pᵀ G (r × n, P: m × r left singular vectors, when m < n) or R = G Qᵀ (m × r, Q: r × n
right singular vectors, when m ≥ n); Adam runs on R, and the normalized step is projected back,
ΔW = α · P N. The projection is recomputed by an SVD of the current gradient every ``update_proj_gap``
steps. Adam's two moments are then r × max(m, n) instead of m × n, plus the r × min(m, n) projection.

Implementation: galore-torch 1.0 (the authors' package: ``GaLoreAdamW``, ``GaLoreAdamW8bit``), not
written here. This module only builds the parameter groups and checks the options.

Where it departs from the paper's setting (as the paper's own code does for fine-tuning): GaLore
applies to the 2-D weight matrices of linear layers whose both sides exceed ``rank``; embeddings,
1-D parameters (biases, LayerNorm) and smaller matrices (a 2-class head, LoRA's rank-r factors) stay on
plain AdamW in the same optimizer, so a method with no such matrix (LoRA, BitFit, IA3...) is a
one-line error rather than a silent AdamW. Defaults follow the paper's GLUE fine-tuning of RoBERTa-base
(update_proj_gap 500, scale 4; it reports ranks 4 and 8, rank 8 here). galore-torch's AdamW uses eps 1e-6 and
bias correction, as transformers' AdamW did. ``eight_bit`` (GaLoreAdamW8bit) asserts CUDA inside
bitsandbytes; here it is a one-line error on a machine without CUDA.

Checkpoints: each projected parameter's state holds a ``GaLoreProjector`` object; the ``galore``
optimizer-state codec (:mod:`nluforge.train.state_codec`) stores its matrix and settings, so a
resumed run projects with the same P and ends with the same weights.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from nluforge.core.errors import UserError

ProjType = Literal["std", "reverse_std", "right", "left", "full"]


def _embedding_params(model: nn.Module) -> set[int]:
    return {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)}


def galore_targets(model: nn.Module, rank: int) -> list[str]:
    """Names of the trainable parameters GaLore projects: 2-D, not an embedding, both sides > rank."""
    embeddings = _embedding_params(model)
    return [n for n, p in model.named_parameters()
            if p.requires_grad and p.ndim == 2 and id(p) not in embeddings and min(p.shape) > rank]


def check(model: nn.Module, method: str, *, rank: int = 8, update_proj_gap: int = 500, scale: float = 4.0,
          proj_type: str = "std", eight_bit: bool = False, **_: Any) -> None:
    if rank < 1 or update_proj_gap < 1:
        raise UserError(f"galore needs rank >= 1 and update_proj_gap >= 1 (got rank={rank}, "
                        f"update_proj_gap={update_proj_gap})")
    if proj_type not in ("std", "reverse_std", "right", "left", "full"):
        raise UserError(f"galore proj_type '{proj_type}' is unknown; use std, reverse_std, right, left or full")
    if eight_bit and not torch.cuda.is_available():
        raise UserError("galore eight_bit=true needs CUDA (galore-torch's GaLoreAdamW8bit runs bitsandbytes' "
                        "CUDA kernels); drop eight_bit or run on a GPU")
    if not galore_targets(model, rank):
        raise UserError(f"optimizer 'galore' does not apply to method '{method}': no trainable weight matrix has "
                        f"both sides above rank {rank}, so GaLore would be plain AdamW; use adamw or a lower rank")


def galore(model: nn.Module, *, lr: float, weight_decay: float, rank: int = 8, update_proj_gap: int = 500,
           scale: float = 4.0, proj_type: ProjType = "std", eight_bit: bool = False, betas=(0.9, 0.999),
           eps: float = 1e-6):
    import galore_torch

    from nluforge.optim import _param_groups

    check(model, "", rank=rank, update_proj_gap=update_proj_gap, scale=scale, proj_type=proj_type,
          eight_bit=eight_bit)
    targets = set(galore_targets(model, rank))
    projected = [p for n, p in model.named_parameters() if n in targets]
    projected_ids = {id(p) for p in projected}
    groups = []
    for group in _param_groups(model, weight_decay):  # the rest: plain AdamW, BERT's no-decay rule
        rest = [p for p in group["params"] if id(p) not in projected_ids]
        if rest:
            groups.append({**group, "params": rest})
    groups.append({"params": projected, "weight_decay": weight_decay, "rank": rank,
                   "update_proj_gap": update_proj_gap, "scale": scale, "proj_type": proj_type})
    if eight_bit:
        opt = galore_torch.GaLoreAdamW8bit(groups, lr=lr, betas=tuple(betas), eps=eps)
    else:
        opt = galore_torch.GaLoreAdamW(groups, lr=lr, betas=tuple(betas), eps=eps, no_deprecation_warning=True)
    opt.nluforge_info = {"backend": "galore-torch", "projected_params": len(projected),
                         "projected_numel": sum(p.numel() for p in projected), "eight_bit": eight_bit}
    return opt
