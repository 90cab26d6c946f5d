"""Linear probe: the encoder is frozen and only the task head is trained.

Paper: Alain & Bengio 2017, "Understanding intermediate layers using linear classifier probes".
Departure: the "linear" head is the model's own classification head (for BERT a pooler-free dense
layer on [CLS]; for RoBERTa/ELECTRA a two-layer head), as transformers builds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from nluforge.methods.base import freeze, head_param_count, unfreeze_head


@dataclass
class Config:
    method: ClassVar[str] = "linear_probe"


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    freeze(model)
    unfreeze_head(model)
    return model


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    return head_param_count(model)
