"""BitFit: train only the bias terms of the encoder, plus the task head.

Paper: Ben Zaken, Ravfogel & Goldberg 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models" (ACL). The paper trains all biases (including LayerNorm's)
with lr around 1e-3; ``include_layernorm=False`` restricts to linear-layer biases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from nluforge.methods.base import freeze, head_modules, unfreeze_head


@dataclass
class Config:
    method: ClassVar[str] = "bitfit"
    include_layernorm: bool = True  # LayerNorm biases (beta) count as biases in the paper


def _biases(model: nn.Module, cfg: Config):
    head_ids = {id(p) for m in head_modules(model) for p in m.parameters()}
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and not cfg.include_layernorm:
            continue
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter) and id(bias) not in head_ids:
            yield bias


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    freeze(model)
    for bias in _biases(model, cfg):
        bias.requires_grad_(True)
    unfreeze_head(model)
    return model


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    head = {id(p): p.numel() for m in head_modules(model) for p in m.parameters()}
    biases = {id(b): b.numel() for b in _biases(model, cfg)}
    return sum((head | biases).values())
