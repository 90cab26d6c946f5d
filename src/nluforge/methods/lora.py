"""LoRA: a frozen weight W plus a trainable low-rank update, W x + (alpha / r) · B A x.

Paper: Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR).
Implementation: peft's ``LoraConfig``. A (r, in) starts Kaiming-uniform and B (out, r) at zero, so the
adapted model starts equal to the pretrained one. Defaults follow the paper's GLUE setup: the query
and value projections of every layer (from the arch table), r = 8.

Departures from the paper: dropout on the LoRA branch input (peft's ``lora_dropout``, 0.1 here);
alpha defaults to 2r (scale 2) where the paper's RoBERTa GLUE runs use alpha = r = 8 (scale 1): the
scale and the learning rate trade off. The task head is trained in full, as in the paper's GLUE runs,
and saved with the adapter. On the default model, a 47-step SST-2 run learns at lr 3e-3 to 5e-3 and
stays at the majority class at 1e-3 (the paper's 4e-4 to 5e-4 are for runs of many epochs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from nluforge.methods import peft_common as pc
from nluforge.methods.base import head_param_count
from nluforge.models.arch import arch_of


@dataclass
class Config:
    method: ClassVar[str] = "lora"
    r: int = 8  # rank of each update; trainable params grow linearly in r
    alpha: float = 16.0  # update scale is alpha / r: raise it (or the lr) to move further from the base
    dropout: float = 0.1  # dropout on the LoRA branch input, in [0, 1)
    target_modules: list[str] | None = None  # Linear layers (peft's suffix rule); None: query, value

    def __post_init__(self):
        pc.check_positive(self.method, r=self.r, alpha=self.alpha)
        pc.check_dropout(self.method, self.dropout)


def targets(model: nn.Module, cfg: Config) -> dict[str, nn.Linear]:
    """The Linear layers this config adapts, by path (checked: they exist, r fits each)."""
    layers = pc.resolve_targets(model, cfg.target_modules or arch_of(model).lora_targets, cfg.method)
    pc.check_rank(layers, cfg.r, cfg.method)
    return layers


def adapt(model: nn.Module, cfg: Config, **_context) -> nn.Module:
    from peft import LoraConfig

    peft_config = LoraConfig(
        task_type="SEQ_CLS", r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=list(targets(model, cfg)),  # exact paths: the same layers the formula counts
    )
    return pc.wrap(model, peft_config)


def expected_trainable(model: nn.Module, cfg: Config) -> int:
    """Per adapted Linear (in -> out): A (r, in) + B (out, r) = r·(in + out); plus the head."""
    lora = sum(cfg.r * (m.in_features + m.out_features) for m in targets(model, cfg).values())
    return lora + head_param_count(model)
