"""Full fine-tuning: every encoder weight and the task head are trained.

Paper: Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (fine-tuning recipe: AdamW, linear warmup and decay, lr 2e-5..5e-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from nluforge.methods.base import count_params, unfreeze


@dataclass
class Config:
    method: ClassVar[str] = "full"


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    unfreeze(model.parameters())
    return model


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    return count_params(model)
